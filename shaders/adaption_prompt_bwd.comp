#version 450
// adaption_prompt_bwd: backward of adaption_prompt_fwd, given dout (∂loss/∂out, out = base + gate·a).
// -DDSCORE: one invocation per (row, head, prompt slot j): with D = dout[i,h,:]·a[i,h,:] and dp = dout[i,h,:]·V[j,kv,:],
//   ds[i,h,j] = scale·gate·p[i,h,j]·(dp − D) (softmax backward; ∂a = gate·dout); the j = 0 invocation also writes
//   D[i,h] (∂loss/∂gate = Σ D).
// -DDQ: one invocation per (row, head, e): dq[i,h,e] += Σ_j ds[i,h,j]·K[j,kv,e].
// -DDKV: one invocation per (j, kv head, e), summing over rows [row_lo, row_hi) and the heads sharing the KV head:
//   dK[j,kv,e] = Σ ds[i,h,j]·q[i,h,e], dV[j,kv,e] = gate·Σ p[i,h,j]·dout[i,h,e]; written, or added when ACCUMULATE
//   (spec constant 1; later row ranges). Writes ds and D, accumulates dq, or writes/accumulates dK and dV.
#include "common.glsl"

layout(constant_id = 1) const uint ACCUMULATE = 0;

#if defined(DSCORE)
layout(std430, set = 0, binding = 0) readonly buffer Dout { float dout[]; };    // [rows, n_heads·hd]
layout(std430, set = 0, binding = 1) readonly buffer V { float values[]; };     // [P, n_kv·hd]
layout(std430, set = 0, binding = 2) readonly buffer A { float ungated[]; };    // [rows, n_heads·hd]
layout(std430, set = 0, binding = 3) readonly buffer Pr { float probs[]; };     // [rows, n_heads, P]
layout(std430, set = 0, binding = 4) readonly buffer G { float gate[]; };       // [1]
layout(std430, set = 0, binding = 5) writeonly buffer Ds { float ds[]; };       // [rows, n_heads, P]
layout(std430, set = 0, binding = 6) writeonly buffer Dd { float dots[]; };     // [rows, n_heads]
#elif defined(DQ)
layout(std430, set = 0, binding = 0) readonly buffer Ds { float ds[]; };        // [rows, n_heads, P]
layout(std430, set = 0, binding = 1) readonly buffer K { float keys[]; };       // [P, n_kv·hd]
layout(std430, set = 0, binding = 2) buffer Dq { float dq[]; };                 // [rows, n_heads·hd]
#else
layout(std430, set = 0, binding = 0) readonly buffer Ds { float ds[]; };        // [rows, n_heads, P]
layout(std430, set = 0, binding = 1) readonly buffer Q { float q[]; };          // [rows, n_heads·hd]
layout(std430, set = 0, binding = 2) readonly buffer Pr { float probs[]; };     // [rows, n_heads, P]
layout(std430, set = 0, binding = 3) readonly buffer Dout { float dout[]; };    // [rows, n_heads·hd]
layout(std430, set = 0, binding = 4) readonly buffer G { float gate[]; };       // [1]
layout(std430, set = 0, binding = 5) buffer Dk { float dk[]; };                 // [P, n_kv·hd]
layout(std430, set = 0, binding = 6) buffer Dv { float dv[]; };                 // [P, n_kv·hd]
#endif

#include "adaption_prompt.glsl"

void main()
{
    uint idx = global_index_2d(pc.groups_x);
    if (idx >= pc.count) return;
    uint group = pc.group, hd = pc.head_dim, np = pc.prompt_len;
    uint kv_width = pc.n_heads / group * hd;
#if defined(DSCORE)
    // idx = (i·n_heads + h)·P + j
    uint j = idx % np;
    uint ih = idx / np;
    uint h = ih % pc.n_heads;
    uint row = ih * hd;
    uint v_base = pc.off1 + j * kv_width + (h / group) * hd;
    float dp = 0.0, d = 0.0;
    for (uint e = 0; e < hd; e++)
    {
        float g = dout[pc.off0 + row + e];
        dp += g * values[v_base + e];
        d += g * ungated[pc.off2 + row + e];
    }
    float gv = gate[pc.off4];
    ds[pc.off5 + idx] = pc.scale * gv * probs[pc.off3 + idx] * (dp - d);
    if (j == 0) dots[pc.off6 + ih] = d;
#elif defined(DQ)
    // idx = (i·n_heads + h)·hd + e
    uint e = idx % hd;
    uint ih = idx / hd;
    uint h = ih % pc.n_heads;
    uint s_base = pc.off0 + ih * np;
    uint k_base = pc.off1 + (h / group) * hd + e;
    float s = 0.0;
    for (uint j = 0; j < np; j++) s += ds[s_base + j] * keys[k_base + j * kv_width];
    dq[pc.off2 + idx] += s;
#else
    // idx = j·kv_width + kv·hd + e
    uint j = idx / kv_width;
    uint c = idx % kv_width;
    uint kv = c / hd, e = c % hd;
    float sk = 0.0, sv = 0.0;
    for (uint i = pc.row_lo; i < pc.row_hi; i++)
        for (uint h = kv * group; h < kv * group + group; h++)
        {
            uint ih = i * pc.n_heads + h;
            uint x = ih * hd + e;
            sk += ds[pc.off0 + ih * np + j] * q[pc.off1 + x];
            sv += probs[pc.off2 + ih * np + j] * dout[pc.off3 + x];
        }
    sv *= gate[pc.off4];
    if (ACCUMULATE != 0)
    {
        sk += dk[pc.off5 + idx];
        sv += dv[pc.off6 + idx];
    }
    dk[pc.off5 + idx] = sk;
    dv[pc.off6 + idx] = sv;
#endif
}
