#version 450
// attention_fwd: o = softmax(scale·q·kᵀ + causal mask)·v per (sequence, query head), grouped-query (kv head = head /
// group), with an online softmax over blocks of BC keys (no [T, S] buffer), and lse = log Σ exp(scores) per query row.
// One invocation per query row, one workgroup per (row block, head, sequence). A dispatch covers keys [lo, hi): the
// first (accumulate == 0) writes o and lse; later ones merge their keys into them (log-sum-exp combine).
#include "attention.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) buffer BufO { float o[]; };
layout(std430, set = 0, binding = 4) buffer BufL { float lse[]; };

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
    // Keys this workgroup needs: up to the position of its last row (uniform across the workgroup).
    uint kend = min(min(pc.S, pc.hi), pc.start_pos + min(i0 + gl_WorkGroupSize.x, pc.T));

    uint qbase = pc.off0 + (b * pc.T + i) * pc.ldq + h * HD_RT;
    uint kbase = pc.off1 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;
    uint vbase = pc.off2 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;

    float qr[HD], acc[HD];
    for (uint d = 0; d < HD_RT; d++)
    {
        qr[d] = q[qbase + d] * pc.scale;
        acc[d] = 0.0;
    }
    float m = NEG_BIG, l = 0.0;

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
        float s[BC];
        float mb = m;
        for (uint c = 0; c < BC; c++)
        {
            float x = NEG_BIG;
            if (j0 + c < kend)   // uniform
            {
                float dot_qk = 0.0;
                for (uint d = 0; d < HD_RT; d++)
                    dot_qk = fma(qr[d], KEL(c, d), dot_qk);
                if (j0 + c <= pos) x = dot_qk;
            }
            s[c] = x;
            mb = max(mb, x);
        }
        // m stays NEG_BIG (and l 0) until the row sees a key: exp(NEG_BIG - NEG_BIG) = 1 rescales nothing, and masked
        // keys add nothing.
        float alpha = exp(m - mb);
        m = mb;
        l *= alpha;
        for (uint d = 0; d < HD_RT; d++) acc[d] *= alpha;
        for (uint c = 0; c < BC; c++)
        {
            if (j0 + c < kend)   // uniform
            {
                float p = j0 + c <= pos ? exp(s[c] - m) : 0.0;
                l += p;
                for (uint d = 0; d < HD_RT; d++)
                    acc[d] = fma(p, VEL(c, d), acc[d]);
            }
        }
    }

    uint obase = pc.off3 + (b * pc.T + i) * pc.ldq + h * HD_RT;
    uint lrow = pc.off4 + (b * pc.n_heads + h) * pc.T + i;
    if (row < pc.T && pc.accumulate == 0u)
    {
        // The first dispatch's keys start at 0, which every row sees, so l > 0.
        float inv = 1.0 / l;
        for (uint d = 0; d < HD_RT; d++)
            o[obase + d] = acc[d] * inv;
        lse[lrow] = m + log(l);
    }
    else if (row < pc.T && l > 0.0)
    {
        // o = (e^lp·o_prev + e^m·acc) / (e^lp + e^m·l), computed relative to mx = max(lp, m).
        float lp = lse[lrow];
        float mx = max(lp, m);
        float wp = exp(lp - mx), wn = exp(m - mx);
        float inv = 1.0 / (wp + wn * l);
        for (uint d = 0; d < HD_RT; d++)
            o[obase + d] = (wp * o[obase + d] + wn * acc[d]) * inv;
        lse[lrow] = mx + log(wp + wn * l);
    }
}
