#version 450
// rmsnorm_weight_grad: dw[c] += Σ_r dy[r, c] · x[r, c] · rstd[r] over this dispatch's rows, in row order; one invocation
// per column. Accumulates dw.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 2) readonly buffer Rstd { float rstd[]; };
layout(std430, set = 0, binding = 3) buffer Dw { float dw[]; };

layout(push_constant) uniform Push
{
    uint rows;
    uint dim;
    uint groups_x;
    uint x_offset, dy_offset, rstd_offset, dw_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint c = global_index_2d(pc.groups_x);
    if (c >= pc.dim) return;
    float acc = 0.0;
    for (uint r = 0; r < pc.rows; r++) acc += dy[pc.dy_offset + r * pc.dim + c] * x[pc.x_offset + r * pc.dim + c] * rstd[pc.rstd_offset + r];
    dw[pc.dw_offset + c] += acc;
}
