#version 450
// rmsnorm_forward: y[r, :] = x[r, :] · rstd[r] ⊙ w with rstd[r] = 1 / sqrt(mean(x[r, :]²) + eps); one workgroup per row.
// Writes y (may alias x) and, with write_rstd, rstd[r] (what rmsnorm_weight_grad needs).
#include "common.glsl"
#include "reduce.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer W { float w[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Rstd { float rstd[]; };

layout(push_constant) uniform Push
{
    uint rows;
    uint dim;
    uint groups_x;
    float eps;
    uint write_rstd;
    uint x_offset, w_offset, y_offset, rstd_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint row = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;
    if (row >= pc.rows) return;   // uniform per workgroup
    uint xb = pc.x_offset + row * pc.dim, yb = pc.y_offset + row * pc.dim;
    float ss = 0.0;
    for (uint c = gl_LocalInvocationID.x; c < pc.dim; c += gl_WorkGroupSize.x) { float v = x[xb + c]; ss += v * v; }
    ss = wg_sum(ss);
    float r = inversesqrt(ss / float(pc.dim) + pc.eps);
    if (pc.write_rstd != 0 && gl_LocalInvocationID.x == 0) rstd[pc.rstd_offset + row] = r;
    for (uint c = gl_LocalInvocationID.x; c < pc.dim; c += gl_WorkGroupSize.x) y[yb + c] = x[xb + c] * r * w[pc.w_offset + c];
}
