#version 450
// attention_bwd_dq: backward of attention_fwd for the queries. With P = exp(scale·q·kᵀ − lse) (causal, recomputed
// from the forward's lse) and D_i = Σ dO_i ⊙ o_i: dq_i = scale · Σ_j P_ij (dO_i·v_j − D_i) k_j. One invocation per query
// row, one workgroup per (row block, head, sequence). A dispatch covers keys [lo, hi): the first (accumulate == 0)
// writes dq, later ones add to it; every dispatch writes delta (D, [B, n_heads, T], read by attention_bwd_dkv).
#include "attention.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) readonly buffer BufO { float o[]; };
layout(std430, set = 0, binding = 4) readonly buffer BufDO { float dout[]; };
layout(std430, set = 0, binding = 5) readonly buffer BufL { float lse[]; };
layout(std430, set = 0, binding = 6) writeonly buffer BufD { float delta[]; };
layout(std430, set = 0, binding = 7) buffer BufDQ { float dq[]; };

#ifdef USE_SHARED
shared float ks[BC][HD];
shared float vs[BC][HD];
#define KEL(c, d) ks[c][d]
#define VEL(c, d) vs[c][d]
#else
#define KEL(c, d) k[kbase + (j0 + c) * pc.ldk + d]
#define VEL(c, d) v[vbase + (j0 + c) * pc.ldk + d]
#endif

void main()
{
    uint h = gl_WorkGroupID.y, b = gl_WorkGroupID.z, kvh = h / pc.group;
    uint i0 = gl_WorkGroupID.x * gl_WorkGroupSize.x;
    uint row = i0 + gl_LocalInvocationID.x;
    uint i = min(row, pc.T - 1);          // rows past T compute a copy of the last row and store nothing
    uint pos = pc.start_pos + i;
    uint kend = min(min(pc.S, pc.hi), pc.start_pos + min(i0 + gl_WorkGroupSize.x, pc.T));

    uint qbase = (b * pc.T + i) * pc.ldq + h * HD_RT;   // row offset shared by q, o, dO and dq (plus their binding offsets)
    uint kbase = pc.off1 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;
    uint vbase = pc.off2 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;
    uint lrow = (b * pc.n_heads + h) * pc.T + i;

    float qr[HD], gr[HD], acc[HD];
    float dsum = 0.0;
    for (uint d = 0; d < HD_RT; d++)
    {
        qr[d] = q[pc.off0 + qbase + d] * pc.scale;
        gr[d] = dout[pc.off4 + qbase + d];
        dsum = fma(gr[d], o[pc.off3 + qbase + d], dsum);
        acc[d] = 0.0;
    }
    float li = lse[pc.off5 + lrow];

    for (uint j0 = pc.lo; j0 < kend; j0 += BC)
    {
#ifdef USE_SHARED
        barrier();
        for (uint e = gl_LocalInvocationID.x; e < BC * HD; e += gl_WorkGroupSize.x)
        {
            uint c = e / HD, d = e % HD, j = j0 + c;
            bool in_range = j < kend && d < HD_RT;
            ks[c][d] = in_range ? k[kbase + j * pc.ldk + d] : 0.0;
            vs[c][d] = in_range ? v[vbase + j * pc.ldk + d] : 0.0;
        }
        barrier();
#endif
        for (uint c = 0; c < BC; c++)
        {
            if (j0 + c < kend)   // uniform
            {
                float kr[HD];
                float sc = 0.0, dp = 0.0;
                for (uint d = 0; d < HD_RT; d++)
                {
                    kr[d] = KEL(c, d);
                    sc = fma(qr[d], kr[d], sc);
                    dp = fma(gr[d], VEL(c, d), dp);
                }
                float p = j0 + c <= pos ? exp(sc - li) : 0.0;
                float ds = p * (dp - dsum);
                for (uint d = 0; d < HD_RT; d++)
                    acc[d] = fma(ds, kr[d], acc[d]);
            }
        }
    }

    if (row < pc.T)
    {
        for (uint d = 0; d < HD_RT; d++)
            dq[pc.off7 + qbase + d] = acc[d] * pc.scale + (pc.accumulate != 0u ? dq[pc.off7 + qbase + d] : 0.0);
        delta[pc.off6 + lrow] = dsum;
    }
}
