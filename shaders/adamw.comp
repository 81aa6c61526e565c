#version 450
// adamw: one PyTorch AdamW step (torch.optim.AdamW, single-tensor path) on flat fp32 tensors, in this order:
// g = grad·grad_scale; p *= 1 − lr·wd; m += (1 − β1)·(g − m); v = β2·v + (1 − β2)·g²;
// p += −step_size · m / (sqrt(v) / bc2_sqrt + eps), step_size = lr / (1 − β1^step), bc2_sqrt = sqrt(1 − β2^step).
// Updates p, m and v in place; grad is only read.
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer P { float param[]; };
layout(std430, set = 0, binding = 1) readonly buffer G { float grad[]; };
layout(std430, set = 0, binding = 2) buffer M { float m1[]; };
layout(std430, set = 0, binding = 3) buffer V { float m2[]; };

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    float decay_factor;      // 1 − lr·wd
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float eps;
    float neg_step_size;     // −lr / (1 − β1^step)
    float bc2_sqrt;          // sqrt(1 − β2^step)
    float grad_scale;
    uint p_offset, g_offset, m_offset, v_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    float g = grad[pc.g_offset + i] * pc.grad_scale;
    float p = param[pc.p_offset + i] * pc.decay_factor;
    float m = m1[pc.m_offset + i];
    m = m + pc.one_minus_beta1 * (g - m);
    float v = m2[pc.v_offset + i] * pc.beta2 + pc.one_minus_beta2 * g * g;
    float denom = sqrt(v) / pc.bc2_sqrt + pc.eps;
    param[pc.p_offset + i] = p + pc.neg_step_size * (m / denom);
    m1[pc.m_offset + i] = m;
    m2[pc.v_offset + i] = v;
}
