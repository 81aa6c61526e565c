#version 450
// attention_bwd_dkv: backward of attention_fwd for the keys and values. With P and D as in attention_bwd_dq (P recomputed
// from lse, D from delta): dv_j = Σ_h Σ_i P_ij dO_i and dk_j = scale · Σ_h Σ_i P_ij (dO_i·v_j − D_i) q_i, summed over
// the query heads h of the kv head's group and the queries i that see key j, in a fixed order (deterministic, no
// atomics). One invocation per key row (all kv_stride rows; keys no query sees get 0), one workgroup per (key block,
// kv head, sequence). The host may split the sum over query heads and query rows into several dispatches (lavapipe's
// loop limit): the first writes dk and dv, later ones (accumulate != 0) add to them, in a fixed order.
#include "attention.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) readonly buffer BufDO { float dout[]; };
layout(std430, set = 0, binding = 4) readonly buffer BufL { float lse[]; };
layout(std430, set = 0, binding = 5) readonly buffer BufD { float delta[]; };
layout(std430, set = 0, binding = 6) buffer BufDK { float dk[]; };
layout(std430, set = 0, binding = 7) buffer BufDV { float dv[]; };

#ifdef USE_SHARED
shared float qs[BC][HD];
shared float gs[BC][HD];
shared float ls[BC];
shared float dls[BC];
#define QEL(c, d) qs[c][d]
#define GEL(c, d) gs[c][d]
#define LEL(c) ls[c]
#define DEL(c) dls[c]
#else
#define QEL(c, d) q[qbase + (i0 + c) * pc.ldq + d]
#define GEL(c, d) dout[gbase + (i0 + c) * pc.ldq + d]
#define LEL(c) lse[lbase + i0 + c]
#define DEL(c) delta[dbase + i0 + c]
#endif

void main()
{
    uint kvh = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
    uint j0 = gl_WorkGroupID.x * gl_WorkGroupSize.x;
    uint krow = j0 + gl_LocalInvocationID.x;
    uint j = min(krow, pc.kv_stride - 1);   // rows past kv_stride compute a copy of the last row and store nothing
    uint rbase = (b * pc.kv_stride + j) * pc.ldk + kvh * HD_RT;

    float kr[HD], vr[HD], acck[HD], accv[HD];
    for (uint d = 0; d < HD_RT; d++)
    {
        kr[d] = k[pc.off1 + rbase + d] * pc.scale;
        vr[d] = v[pc.off2 + rbase + d];
        acck[d] = 0.0;
        accv[d] = 0.0;
    }

    // Queries that can see the workgroup's first key: position start_pos + i >= j0 (uniform).
    uint istart = max(pc.lo, j0 > pc.start_pos ? j0 - pc.start_pos : 0u);
    for (uint hh = pc.head_lo; hh < pc.head_hi; hh++)
    {
        uint h = kvh * pc.group + hh;
        uint qbase = pc.off0 + b * pc.T * pc.ldq + h * HD_RT;
        uint gbase = pc.off3 + b * pc.T * pc.ldq + h * HD_RT;
        uint lbase = pc.off4 + (b * pc.n_heads + h) * pc.T;
        uint dbase = pc.off5 + (b * pc.n_heads + h) * pc.T;
        for (uint i0 = istart; i0 < pc.hi; i0 += BC)
        {
#ifdef USE_SHARED
            barrier();
            for (uint e = gl_LocalInvocationID.x; e < BC * HD; e += gl_WorkGroupSize.x)
            {
                uint c = e / HD, d = e % HD, i = i0 + c;
                bool in_range = i < pc.hi && d < HD_RT;
                qs[c][d] = in_range ? q[qbase + i * pc.ldq + d] : 0.0;
                gs[c][d] = in_range ? dout[gbase + i * pc.ldq + d] : 0.0;
            }
            for (uint c = gl_LocalInvocationID.x; c < BC; c += gl_WorkGroupSize.x)
            {
                bool in_range = i0 + c < pc.hi;
                ls[c] = in_range ? lse[lbase + i0 + c] : 0.0;
                dls[c] = in_range ? delta[dbase + i0 + c] : 0.0;
            }
            barrier();
#endif
            for (uint c = 0; c < BC; c++)
            {
                if (i0 + c < pc.hi)   // uniform
                {
                    float qv[HD], gv[HD];
                    float sc = 0.0, dp = 0.0;
                    for (uint d = 0; d < HD_RT; d++)
                    {
                        qv[d] = QEL(c, d);
                        gv[d] = GEL(c, d);
                        sc = fma(kr[d], qv[d], sc);
                        dp = fma(vr[d], gv[d], dp);
                    }
                    float p = pc.start_pos + i0 + c >= j ? exp(sc - LEL(c)) : 0.0;
                    float ds = p * (dp - DEL(c));
                    for (uint d = 0; d < HD_RT; d++)
                    {
                        accv[d] = fma(p, gv[d], accv[d]);
                        acck[d] = fma(ds, qv[d], acck[d]);
                    }
                }
            }
        }
    }

    if (krow < pc.kv_stride)
    {
        for (uint d = 0; d < HD_RT; d++)
        {
            float gk = acck[d] * pc.scale, gv = accv[d];
            if (pc.accumulate != 0u)
            {
                gk += dk[pc.off6 + rbase + d];
                gv += dv[pc.off7 + rbase + d];
            }
            dk[pc.off6 + rbase + d] = gk;
            dv[pc.off7 + rbase + d] = gv;
        }
    }
}
