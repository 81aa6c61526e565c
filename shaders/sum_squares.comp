#version 450
// sum_squares: out[j] = Σ x[i]² over chunk j of this dispatch's count elements (chunk = ceil(count / groups)); one workgroup
// per chunk. Writes out[j], or accumulates (out[j] += ...) with accumulate = 1.
// With -DTABLE it covers many tensors of one flat buffer in one dispatch: table[t] = (element offset, count) of tensor t,
// count = the number of tensors, and workgroup j adds the sums of chunk j of each tensor in table order
// (chunk = ceil(count_t / groups)), exactly as one accumulating dispatch per tensor would.
#include "common.glsl"
#include "reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) buffer Out { float y[]; };
#ifdef TABLE
layout(std430, set = 0, binding = 2) readonly buffer Table { uvec2 table[]; };   // [tensors] (offset, count)
#endif

layout(push_constant) uniform Push
{
    uint count;
    uint chunk;
    uint groups;
    uint accumulate;
    uint x_offset, y_offset;   // element offsets inside each binding
} pc;

// Σ x² over elements [start, end) of x, summed by the whole workgroup.
float chunk_sum(uint start, uint end)
{
    float acc = 0.0;
    for (uint i = start + gl_LocalInvocationID.x; i < end; i += gl_WorkGroupSize.x) { float v = x[pc.x_offset + i]; acc += v * v; }
    return wg_sum(acc);
}

void main()
{
    uint j = gl_WorkGroupID.x;
    if (j >= pc.groups) return;   // uniform per workgroup
    uint o = pc.y_offset + j;
#ifdef TABLE
    float total = 0.0;
    for (uint t = 0; t < pc.count; t++)   // uniform: every invocation reads the same table entries
    {
        uint base = table[t].x, n = table[t].y, chunk = (n + pc.groups - 1) / pc.groups;
        uint start = min(j * chunk, n), end = min(start + chunk, n);
        float acc = chunk_sum(base + start, base + end);
        total = (t == 0 && pc.accumulate == 0) ? acc : (t == 0 ? y[o] + acc : total + acc);
    }
    if (gl_LocalInvocationID.x == 0 && pc.count > 0) y[o] = total;
#else
    uint start = j * pc.chunk, end = min(start + pc.chunk, pc.count);
    float acc = chunk_sum(start, end);
    if (gl_LocalInvocationID.x == 0) y[o] = pc.accumulate != 0 ? y[o] + acc : acc;
#endif
}
