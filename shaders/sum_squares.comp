#version 450
// sum_squares: out[j] = Σ x[i]² over chunk j of this dispatch's count elements (chunk = ceil(count / groups)); one workgroup
// per chunk. Writes out[j], or accumulates (out[j] += ...) with accumulate = 1.
#include "common.glsl"
#include "reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) buffer Out { float y[]; };

layout(push_constant) uniform Push
{
    uint count;
    uint chunk;
    uint groups;
    uint accumulate;
    uint x_offset, y_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint j = gl_WorkGroupID.x;
    if (j >= pc.groups) return;   // uniform per workgroup
    uint start = j * pc.chunk, end = min(start + pc.chunk, pc.count);
    float acc = 0.0;
    for (uint i = start + gl_LocalInvocationID.x; i < end; i += gl_WorkGroupSize.x) { float v = x[pc.x_offset + i]; acc += v * v; }
    acc = wg_sum(acc);
    if (gl_LocalInvocationID.x == 0)
    {
        uint o = pc.y_offset + j;
        y[o] = pc.accumulate != 0 ? y[o] + acc : acc;
    }
}
