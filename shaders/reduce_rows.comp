#version 450
// reduce_rows: out[r] = sum (OP 0) or max (OP 1) of in[r*cols .. r*cols+cols-1]; one workgroup per row.
// Writes out (or accumulates with ACCUMULATE=1: out[r] = combine(out[r], result), used to join split inputs).
#include "common.glsl"
#include "reduce.glsl"

layout(constant_id = 1) const uint OP = 0;
layout(constant_id = 2) const uint ACCUMULATE = 0;

layout(std430, set = 0, binding = 0) readonly buffer In { float x[]; };
layout(std430, set = 0, binding = 1) buffer Out { float y[]; };

layout(push_constant) uniform Push
{
    uint rows;
    uint cols;
    uint groups_x;
    uint x_offset, y_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint row = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;
    if (row >= pc.rows) return;   // uniform per workgroup
    uint base = pc.x_offset + row * pc.cols;
    float acc = OP == 0 ? 0.0 : uintBitsToFloat(0xff800000u);
    for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x)
        acc = OP == 0 ? acc + x[base + c] : max(acc, x[base + c]);
    float r = OP == 0 ? wg_sum(acc) : wg_max(acc);
    if (gl_LocalInvocationID.x == 0)
    {
        uint o = pc.y_offset + row;
        if (ACCUMULATE != 0) r = OP == 0 ? y[o] + r : max(y[o], r);
        y[o] = r;
    }
}
