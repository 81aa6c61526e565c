#version 450
// attention_fwd: o = softmax(scale·q·kᵀ + causal mask)·v per (sequence, query head), grouped-query (kv head = head /
// group), with an online softmax over blocks of BC keys (no [T, S] buffer), and lse = log Σ exp(scores) per query row.
// One invocation per query row, one workgroup per (row block, head, sequence). Writes o and lse.
#include "attention.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) writeonly buffer BufO { float o[]; };
layout(std430, set = 0, binding = 4) writeonly buffer BufL { float lse[]; };

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
    uint kend = min(pc.S, pc.start_pos + min(i0 + gl_WorkGroupSize.x, pc.T));

    uint qbase = pc.off0 + (b * pc.T + i) * pc.ldq + h * HD;
    uint kbase = pc.off1 + b * pc.kv_stride * pc.ldk + kvh * HD;
    uint vbase = pc.off2 + b * pc.kv_stride * pc.ldk + kvh * HD;

    float qr[HD], acc[HD];
    [[unroll]] for (uint d = 0; d < HD; d++)
    {
        qr[d] = q[qbase + d] * pc.scale;
        acc[d] = 0.0;
    }
    float m = NEG_BIG, l = 0.0;

    for (uint j0 = 0; j0 < kend; j0 += BC)
    {
#ifdef USE_SHARED
        barrier();
        for (uint e = gl_LocalInvocationID.x; e < BC * HD; e += gl_WorkGroupSize.x)
        {
            uint c = e / HD, d = e % HD, j = j0 + c;
            bool in_range = j < kend;
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
                [[unroll]] for (uint d = 0; d < HD; d++)
                    dot_qk = fma(qr[d], KEL(c, d), dot_qk);
                if (j0 + c <= pos) x = dot_qk;
            }
            s[c] = x;
            mb = max(mb, x);
        }
        // Key 0 is visible to every row, so after the first block m is a real score and the rescale is exact.
        float alpha = exp(m - mb);
        m = mb;
        l *= alpha;
        [[unroll]] for (uint d = 0; d < HD; d++) acc[d] *= alpha;
        for (uint c = 0; c < BC; c++)
        {
            if (j0 + c < kend)   // uniform
            {
                float p = exp(s[c] - m);
                l += p;
                [[unroll]] for (uint d = 0; d < HD; d++)
                    acc[d] = fma(p, VEL(c, d), acc[d]);
            }
        }
    }

    if (row < pc.T)
    {
        float inv = 1.0 / l;
        uint obase = pc.off3 + (b * pc.T + i) * pc.ldq + h * HD;
        [[unroll]] for (uint d = 0; d < HD; d++)
            o[obase + d] = acc[d] * inv;
        lse[pc.off4 + (b * pc.n_heads + h) * pc.T + i] = m + log(l);
    }
}
