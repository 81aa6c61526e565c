#version 450
// attention_paged: causal grouped-query attention of a serving step whose sequences keep their keys and values in a
// paged KV cache. The cache is a pool of fixed-size pages ([pages·page_size, n_kv_heads·head_dim] per layer for k and
// for v); each sequence owns a page table (its logical key j lives in row pages[table + j / page_size]·page_size +
// j % page_size of the pool) and a run of query rows of the step: seqs[s] = (first row, rows T, start position,
// page-table offset). Query row i of sequence s (position start + i) sees keys 0..start+i. The arithmetic per row is
// attention_fwd's (online softmax over blocks of BC keys, the same fma order), so a sequence served from pages gets the
// bits it would get from one contiguous cache. One invocation per query row, one workgroup per (row block, head,
// sequence); a dispatch covers logical keys [lo, hi): the first (accumulate == 0) writes o and lse [rows, n_heads],
// later ones merge their keys in (log-sum-exp combine), as lavapipe bounds the loop iterations of one invocation.
#include "common.glsl"

#ifndef HD
#define HD 64u
#endif
#ifndef BC
#define BC 8u
#endif
#define HD_RT pc.head_dim
// Large finite stand-in for -inf, as in attention.glsl.
#define NEG_BIG (-1.0e30)

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };      // [rows, n_heads·head_dim]
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };      // [pages·page_size, n_kv_heads·head_dim]
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };      // as k
layout(std430, set = 0, binding = 3) buffer BufO { float o[]; };               // [rows, n_heads·head_dim]
layout(std430, set = 0, binding = 4) buffer BufL { float lse[]; };             // [rows, n_heads]
layout(std430, set = 0, binding = 5) readonly buffer BufS { uint seqs[]; };    // [sequences, 4]
layout(std430, set = 0, binding = 6) readonly buffer BufP { uint pages[]; };   // page tables, concatenated

layout(push_constant) uniform Push
{
    uint n_heads;
    uint group;       // query heads per kv head
    uint ldq;         // n_heads * head_dim
    uint ldk;         // n_kv_heads * head_dim
    float scale;      // 1 / sqrt(head_dim)
    uint head_dim;    // <= HD
    uint page_size;   // keys per page
    uint lo, hi, accumulate;
    uint off_q, off_k, off_v, off_o, off_lse, off_seq, off_page;   // element offset inside each binding
} pc;

void main()
{
    uint h = gl_WorkGroupID.y, kvh = h / pc.group;
    uint sb = pc.off_seq + gl_WorkGroupID.z * 4u;
    uint first = seqs[sb], T = seqs[sb + 1u], start = seqs[sb + 2u], table = pc.off_page + seqs[sb + 3u];
    uint i0 = gl_WorkGroupID.x * gl_WorkGroupSize.x;
    if (i0 >= T) return;                  // uniform: the grid covers the longest sequence's rows
    uint row = i0 + gl_LocalInvocationID.x;
    uint i = min(row, T - 1u);            // rows past T compute a copy of the last row and store nothing
    uint pos = start + i;
    // Keys this workgroup needs: up to the position of its last row (uniform across the workgroup).
    uint kend = min(pc.hi, start + min(i0 + gl_WorkGroupSize.x, T));

    uint qbase = pc.off_q + (first + i) * pc.ldq + h * HD_RT;
    float qr[HD], acc[HD];
    for (uint d = 0; d < HD_RT; d++)
    {
        qr[d] = q[qbase + d] * pc.scale;
        acc[d] = 0.0;
    }
    float m = NEG_BIG, l = 0.0;

    for (uint j0 = pc.lo; j0 < kend; j0 += BC)
    {
        // Pool element offsets of this block's keys, through the page table (uniform across the workgroup).
        uint kr[BC];
        for (uint c = 0; c < BC; c++)
        {
            uint j = min(j0 + c, kend - 1u);
            kr[c] = (pages[table + j / pc.page_size] * pc.page_size + j % pc.page_size) * pc.ldk + kvh * HD_RT;
        }
        float s[BC];
        float mb = m;
        for (uint c = 0; c < BC; c++)
        {
            float x = NEG_BIG;
            if (j0 + c < kend)   // uniform
            {
                float dot_qk = 0.0;
                for (uint d = 0; d < HD_RT; d++)
                    dot_qk = fma(qr[d], k[pc.off_k + kr[c] + d], dot_qk);
                if (j0 + c <= pos) x = dot_qk;
            }
            s[c] = x;
            mb = max(mb, x);
        }
        // m stays NEG_BIG (and l 0) until the row sees a key; masked keys add nothing.
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
                    acc[d] = fma(p, v[pc.off_v + kr[c] + d], acc[d]);
            }
        }
    }

    uint obase = pc.off_o + (first + i) * pc.ldq + h * HD_RT;
    uint lrow = pc.off_lse + (first + i) * pc.n_heads + h;
    if (row < T && pc.accumulate == 0u)
    {
        // The first dispatch's keys start at 0, which every row sees, so l > 0.
        float inv = 1.0 / l;
        for (uint d = 0; d < HD_RT; d++)
            o[obase + d] = acc[d] * inv;
        lse[lrow] = m + log(l);
    }
    else if (row < T && l > 0.0)
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
