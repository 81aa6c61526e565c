#version 450
// adamw: one PyTorch AdamW step (torch.optim.AdamW, single-tensor path) on flat fp32 tensors, in this order:
// g = grad·grad_scale; p *= 1 − lr·wd; m += (1 − β1)·(g − m); v = β2·v + (1 − β2)·g²;
// p += −step_size · m / (sqrt(v) / bc2_sqrt + eps), step_size = lr / (1 − β1^step), bc2_sqrt = sqrt(1 − β2^step).
// Updates p, m and v in place; grad is only read.
// DEVICE_CLIP: global-norm clipping from a status row on the device (no host read between the norm and the update):
// status[status_offset] = Σ grad², status[status_offset + 1 ..] = the step's loss sums; the gradient is also scaled by
// clip / ‖grad‖ when ‖grad‖ > clip > 0, and no element is touched when any status value is not finite (the host finds
// that value when it reads the row and stops training on an unchanged state).
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer P { float param[]; };
layout(std430, set = 0, binding = 1) readonly buffer G { float grad[]; };
layout(std430, set = 0, binding = 2) buffer M { float m1[]; };
layout(std430, set = 0, binding = 3) buffer V { float m2[]; };
#ifdef DEVICE_CLIP
layout(std430, set = 0, binding = 4) readonly buffer S { float status[]; };
#endif

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
#ifdef DEVICE_CLIP
    uint status_offset;      // the step's status row: Σ grad², then loss sums
    uint status_count;
    float clip;              // max ‖grad‖ (0 = no clipping)
#endif
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    float scale = pc.grad_scale;
#ifdef DEVICE_CLIP
    for (uint k = 0; k < pc.status_count; k++)
    {
        float s = status[pc.status_offset + k];
        if (isnan(s) || isinf(s)) return;
    }
    float norm = sqrt(status[pc.status_offset]);
    if (pc.clip > 0.0 && norm > pc.clip) scale *= pc.clip / norm;
#endif
    float g = grad[pc.g_offset + i] * scale;
    float p = param[pc.p_offset + i] * pc.decay_factor;
    float m = m1[pc.m_offset + i];
    m = m + pc.one_minus_beta1 * (g - m);
    float v = m2[pc.v_offset + i] * pc.beta2 + pc.one_minus_beta2 * g * g;
    float denom = sqrt(v) / pc.bc2_sqrt + pc.eps;
    param[pc.p_offset + i] = p + pc.neg_step_size * (m / denom);
    m1[pc.m_offset + i] = m;
    m2[pc.v_offset + i] = v;
}
