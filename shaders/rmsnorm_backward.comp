#version 450
// rmsnorm_backward: for y = x·rstd ⊙ w (w frozen here), dx[r, :] = rstd·(w ⊙ dy) − x · rstd³ · Σ(w ⊙ dy ⊙ x) / dim;
// one workgroup per row, rstd recomputed from x. Writes dx (may alias dy), or accumulates it with ACCUMULATE = 1
// (spec constant 1); with write_rstd also writes rstd[r] for rmsnorm_weight_grad.
#include "common.glsl"
#include "reduce.glsl"

layout(constant_id = 1) const uint ACCUMULATE = 0;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer W { float w[]; };
layout(std430, set = 0, binding = 2) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 3) buffer Dx { float dx[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Rstd { float rstd[]; };

layout(push_constant) uniform Push
{
    uint rows;
    uint dim;
    uint groups_x;
    float eps;
    uint write_rstd;
    uint x_offset, w_offset, dy_offset, dx_offset, rstd_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint row = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;
    if (row >= pc.rows) return;   // uniform per workgroup
    uint xb = pc.x_offset + row * pc.dim, gb = pc.dy_offset + row * pc.dim, ob = pc.dx_offset + row * pc.dim;
    float ss = 0.0, dot = 0.0;
    for (uint c = gl_LocalInvocationID.x; c < pc.dim; c += gl_WorkGroupSize.x)
    {
        float v = x[xb + c];
        ss += v * v;
        dot += w[pc.w_offset + c] * dy[gb + c] * v;
    }
    ss = wg_sum(ss);
    dot = wg_sum(dot);
    float r = inversesqrt(ss / float(pc.dim) + pc.eps);
    float k = r * r * r * dot / float(pc.dim);
    if (pc.write_rstd != 0 && gl_LocalInvocationID.x == 0) rstd[pc.rstd_offset + row] = r;
    for (uint c = gl_LocalInvocationID.x; c < pc.dim; c += gl_WorkGroupSize.x)
    {
        float g = r * w[pc.w_offset + c] * dy[gb + c] - k * x[xb + c];
        dx[ob + c] = ACCUMULATE != 0 ? dx[ob + c] + g : g;
    }
}
