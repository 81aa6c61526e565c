#version 450
// adaption_prompt_fwd: LLaMA-Adapter's gated attention over P learned prompt keys/values, a softmax of its own beside
// the causal one. Per query row i and head h (KV head h / GROUP): p[i,h,j] = softmax_j(scale · q[i,h,:]·K[j,kv,:]).
// -DSCORES: one invocation per (row, head) writes p (scores, then max, exp, sum and normalization in place).
// -DOUTPUT: one invocation per output element (row, head, e): a = Σ_j p[i,h,j]·V[j,kv,e] (the ungated prompt
// attention, kept for the backward) and out = base + gate·a (base: the causal attention output; gate: one scalar).
// Writes p, or writes a and out.
#include "common.glsl"

#ifdef SCORES
layout(std430, set = 0, binding = 0) readonly buffer Q { float q[]; };          // [rows, n_heads·hd]
layout(std430, set = 0, binding = 1) readonly buffer K { float keys[]; };       // [P, n_kv·hd]
layout(std430, set = 0, binding = 2) buffer Pr { float probs[]; };              // [rows, n_heads, P]
#else
layout(std430, set = 0, binding = 0) readonly buffer Pr { float probs[]; };     // [rows, n_heads, P]
layout(std430, set = 0, binding = 1) readonly buffer V { float values[]; };     // [P, n_kv·hd]
layout(std430, set = 0, binding = 2) readonly buffer G { float gate[]; };       // [1]
layout(std430, set = 0, binding = 3) readonly buffer B { float base_out[]; };   // [rows, n_heads·hd]
layout(std430, set = 0, binding = 4) writeonly buffer A { float ungated[]; };   // [rows, n_heads·hd]
layout(std430, set = 0, binding = 5) writeonly buffer O { float out_[]; };      // [rows, n_heads·hd]
#endif

#include "adaption_prompt.glsl"

void main()
{
    uint idx = global_index_2d(pc.groups_x);
    if (idx >= pc.count) return;
    uint group = pc.group, hd = pc.head_dim, np = pc.prompt_len;
    uint kv_width = pc.n_heads / group * hd;
#ifdef SCORES
    // idx = i·n_heads + h
    uint h = idx % pc.n_heads;
    uint q_base = pc.off0 + idx * hd;                       // row i, head h: (i·n_heads + h)·hd
    uint k_base = pc.off1 + (h / group) * hd;
    uint p_base = pc.off2 + idx * np;
    float m = -3.402823466e38;
    for (uint j = 0; j < np; j++)
    {
        float s = 0.0;
        for (uint e = 0; e < hd; e++) s += q[q_base + e] * keys[k_base + j * kv_width + e];
        s *= pc.scale;
        probs[p_base + j] = s;
        m = max(m, s);
    }
    float sum = 0.0;
    for (uint j = 0; j < np; j++)
    {
        float x = exp(probs[p_base + j] - m);
        probs[p_base + j] = x;
        sum += x;
    }
    float inv = 1.0 / sum;
    for (uint j = 0; j < np; j++) probs[p_base + j] *= inv;
#else
    // idx = (i·n_heads + h)·hd + e
    uint e = idx % hd;
    uint ih = idx / hd;
    uint h = ih % pc.n_heads;
    uint p_base = pc.off0 + ih * np;
    uint v_base = pc.off1 + (h / group) * hd + e;
    float a = 0.0;
    for (uint j = 0; j < np; j++) a += probs[p_base + j] * values[v_base + j * kv_width];
    ungated[pc.off4 + idx] = a;
    out_[pc.off5 + idx] = base_out[pc.off3 + idx] + gate[pc.off2] * a;
#endif
}
