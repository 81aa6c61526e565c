#version 450
// softmax_rows: y[r, :] = exp(x[r, :] - max) / sum(exp(x[r, :] - max)); one workgroup per row. Writes y (may alias x).
#include "common.glsl"
#include "reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer In { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float y[]; };

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
    uint base = row * pc.cols;
    uint xb = pc.x_offset + base, yb = pc.y_offset + base;
    float m = uintBitsToFloat(0xff800000u);
    for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x) m = max(m, x[xb + c]);
    m = wg_max(m);
    float s = 0.0;
    for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x) s += exp(x[xb + c] - m);
    s = wg_sum(s);
    float inv = 1.0 / s;
    for (uint c = gl_LocalInvocationID.x; c < pc.cols; c += gl_WorkGroupSize.x) y[yb + c] = exp(x[xb + c] - m) * inv;
}
