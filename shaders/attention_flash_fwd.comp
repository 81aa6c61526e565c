#version 450
// attention_flash_fwd: the forward of attention_fwd (same inputs, outputs, push block and dispatch chaining: keys
// [lo, hi), the first dispatch writes o and lse, later ones merge by log-sum-exp) organised FlashAttention-2 style for
// GPUs: a workgroup owns FLASH_ROWS query rows (of FLASH_HEADS heads sharing a kv head); blocks of BC keys and values
// stream through shared memory once for all of them; S = Q·Kᵀ is computed as a FLASH_ROWS × BC tile with the head
// dimension split across each row's lanes, the online softmax runs in fp32, and O += P·V as a FLASH_ROWS × HD tile
// spread over the workgroup. Key blocks past the last row's position (above the causal diagonal) are never loaded.
// One workgroup per (row block, head block, sequence).
// COOPMAT: S = Q·Kᵀ and the block's P·V run as NV cooperative matrices (attention_flash_coop.glsl: power-of-two scaled
// hi/lo fp16 operands, fp32 accumulation); the online softmax, l, m and the output accumulators stay fp32.
#include "attention_flash.glsl"
#ifdef COOPMAT
#include "attention_flash_coop.glsl"
#endif

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) buffer BufO { float o[]; };
layout(std430, set = 0, binding = 4) buffer BufL { float lse[]; };

#ifdef COOPMAT
shared float16_t qh[FLASH_ROWS * HS], ql[FLASH_ROWS * HS];   // scaled queries (scale · q · sq), hi/lo
shared float16_t kh[CBC * HS], kl[CBC * HS];                 // the key block · sk, hi/lo
shared float16_t vh[CBC * HS], vl[CBC * HS];                 // the value block · sv, hi/lo
shared float st[FLASH_ROWS * FS];                            // the block's scores · sq · sk
shared float16_t pt[FLASH_ROWS * TS];                        // the block's probabilities
shared float cb[FLASH_ROWS * CS];                            // P·V · sv of the block
shared uint amax[5];                                         // float bits of block maxima: q; keys, values by block parity
#else
shared float ks[BC][HD];
shared float vs[BC][HD];
shared float part[FLASH_ROWS][BC][FLASH_TPR];   // per-lane partial scores
#endif

void main()
{
    uint r = FLASH_R, lane = FLASH_LANE;
    uint h = gl_WorkGroupID.y * FLASH_HEADS + r % FLASH_HEADS, b = gl_WorkGroupID.z, kvh = h / pc.group;
    uint i0 = gl_WorkGroupID.x * FLASH_POSITIONS;
    uint row = i0 + r / FLASH_HEADS;
    uint i = min(row, pc.T - 1);          // rows past T compute a copy of the last row and store nothing
    uint pos = pc.start_pos + i;
    // Keys this workgroup needs: up to the position of its last row (uniform across the workgroup).
    uint kend = min(min(pc.S, pc.hi), pc.start_pos + min(i0 + FLASH_POSITIONS, pc.T));

    uint qbase = pc.off0 + (b * pc.T + i) * pc.ldq + h * HD_RT;
    uint kbase = pc.off1 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;
    uint vbase = pc.off2 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;

#ifdef COOPMAT
    uint tid = gl_LocalInvocationID.x;
    float qv[FLASH_DPL], acc[FLASH_DPL];
    float qmax = 0.0;
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint d = FLASH_COL(lane, n);
        qv[n] = d < HD_RT ? q[qbase + d] * pc.scale : 0.0;
        qmax = max(qmax, abs(qv[n]));
        acc[n] = 0.0;
    }
    if (tid < 5u) amax[tid] = 0u;
    barrier();
    atomicMax(amax[0], floatBitsToUint(qmax));
    barrier();
    float sq = pow2_scale(uintBitsToFloat(amax[0]));
    for (uint n = 0; n < FLASH_DPL; n++) STORE_SPLIT(qh, ql, r * HS + FLASH_COL(lane, n), qv[n] * sq);
    float m = NEG_BIG, l = 0.0;

    uint blk = 0u;
    for (uint j0 = pc.lo; j0 < kend; j0 += CBC, blk++)
    {
        uint par = 1u + 2u * (blk & 1u);   // this block's maxima; the other parity's are reset for the next block
        barrier();
        if (tid == 0u) { amax[4u - par] = 0u; amax[5u - par] = 0u; }
        float mk = 0.0, mv = 0.0;
        for (uint e = tid; e < CBC * HD; e += FLASH_WG)
        {
            uint c = e / HD, d = e % HD, j = j0 + c;
            if (j < kend && d < HD_RT)
            {
                mk = max(mk, abs(k[kbase + j * pc.ldk + d]));
                mv = max(mv, abs(v[vbase + j * pc.ldk + d]));
            }
        }
        atomicMax(amax[par], floatBitsToUint(mk));
        atomicMax(amax[par + 1u], floatBitsToUint(mv));
        barrier();
        float sk = pow2_scale(uintBitsToFloat(amax[par])), sv = pow2_scale(uintBitsToFloat(amax[par + 1u]));
        for (uint e = tid; e < CBC * HD; e += FLASH_WG)
        {
            uint c = e / HD, d = e % HD, j = j0 + c;
            bool in_range = j < kend && d < HD_RT;
            STORE_SPLIT(kh, kl, c * HS + d, in_range ? k[kbase + j * pc.ldk + d] * sk : 0.0);
            STORE_SPLIT(vh, vl, c * HS + d, in_range ? v[vbase + j * pc.ldk + d] * sv : 0.0);
        }
        barrier();
        if (gl_SubgroupID == 0u)
        {
            CM_ACC sacc = CM_ACC(0.0);
            MUL_ABT_SPLIT(sacc, qh, ql, 0u, kh, kl, 0u);
            coopMatStoreNV(sacc, st, 0u, FS, false);
        }
        barrier();
        // Online softmax in fp32: every lane of the row reads the row's scores in the same order (same m and l).
        float unscale = 1.0 / (sq * sk);
        float mb = m;
        for (uint c = 0; c < CBC; c++)
            if (j0 + c < kend && j0 + c <= pos) mb = max(mb, st[r * FS + c] * unscale);
        float alpha = exp(m - mb);
        m = mb;
        l *= alpha;
        for (uint c = 0; c < CBC; c++)
        {
            float p = j0 + c < kend && j0 + c <= pos ? exp(st[r * FS + c] * unscale - m) : 0.0;
            l += p;
            if (c % FLASH_TPR == lane) pt[r * TS + c] = float16_t(p);
        }
        barrier();
        MUL_AB_SPLIT_TO(cb, pt, vh, vl);
        barrier();
        float vunscale = 1.0 / sv;
        for (uint n = 0; n < FLASH_DPL; n++) acc[n] = fma(acc[n], alpha, cb[r * CS + FLASH_COL(lane, n)] * vunscale);
    }
#else
    float qr[FLASH_DPL], acc[FLASH_DPL];
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint d = FLASH_COL(lane, n);
        qr[n] = d < HD_RT ? q[qbase + d] * pc.scale : 0.0;
        acc[n] = 0.0;
    }
    float m = NEG_BIG, l = 0.0;

    for (uint j0 = pc.lo; j0 < kend; j0 += BC)
    {
        barrier();
        for (uint e = gl_LocalInvocationID.x; e < BC * HD; e += FLASH_WG)
        {
            uint c = e / HD, d = e % HD, j = j0 + c;
            bool in_range = j < kend && d < HD_RT;
            ks[c][d] = in_range ? k[kbase + j * pc.ldk + d] : 0.0;
            vs[c][d] = in_range ? v[vbase + j * pc.ldk + d] : 0.0;
        }
        barrier();
        [[dont_unroll]] for (uint c = 0; c < BC; c++)
        {
            float s = 0.0;
            for (uint n = 0; n < FLASH_DPL; n++)
                s = fma(qr[n], ks[c][FLASH_COL(lane, n)], s);
            part[r][c][lane] = s;
        }
        barrier();
        // Every lane of the row sums the partials in the same order, so all hold the same scores (summed again in the
        // update loop rather than kept in an array a rolled loop would index).
        float mb = m;
        [[dont_unroll]] for (uint c = 0; c < BC; c++)
        {
            float s = 0.0;
            for (uint t = 0; t < FLASH_TPR; t++) s += part[r][c][t];
            if (j0 + c < kend && j0 + c <= pos) mb = max(mb, s);
        }
        // m stays NEG_BIG (and l 0) until the row sees a key: exp(NEG_BIG - NEG_BIG) = 1 rescales nothing, and masked
        // keys add nothing.
        float alpha = exp(m - mb);
        m = mb;
        l *= alpha;
        for (uint n = 0; n < FLASH_DPL; n++) acc[n] *= alpha;
        [[dont_unroll]] for (uint c = 0; c < BC; c++)
        {
            float s = 0.0;
            for (uint t = 0; t < FLASH_TPR; t++) s += part[r][c][t];
            float p = j0 + c < kend && j0 + c <= pos ? exp(s - m) : 0.0;
            l += p;
            for (uint n = 0; n < FLASH_DPL; n++)
                acc[n] = fma(p, vs[c][FLASH_COL(lane, n)], acc[n]);
        }
    }

#endif

    uint obase = pc.off3 + (b * pc.T + i) * pc.ldq + h * HD_RT;
    uint lrow = pc.off4 + (b * pc.n_heads + h) * pc.T + i;
    bool store = row < pc.T;
    if (pc.accumulate == 0u)
    {
        if (store)
        {
            // The first dispatch's keys start at 0, which every row sees, so l > 0.
            float inv = 1.0 / l;
            for (uint n = 0; n < FLASH_DPL; n++)
            {
                uint d = FLASH_COL(lane, n);
                if (d < HD_RT) o[obase + d] = acc[n] * inv;
            }
            if (lane == 0u) lse[lrow] = m + log(l);
        }
    }
    else
    {
        // o = (e^lp·o_prev + e^m·acc) / (e^lp + e^m·l), computed relative to mx = max(lp, m). Every lane reads the
        // previous lse before lane 0 replaces it.
        float lp = store ? lse[lrow] : 0.0;
        barrier();
        if (store && l > 0.0)
        {
            float mx = max(lp, m);
            float wp = exp(lp - mx), wn = exp(m - mx);
            float inv = 1.0 / (wp + wn * l);
            for (uint n = 0; n < FLASH_DPL; n++)
            {
                uint d = FLASH_COL(lane, n);
                if (d < HD_RT) o[obase + d] = (wp * o[obase + d] + wn * acc[n]) * inv;
            }
            if (lane == 0u) lse[lrow] = mx + log(wp + wn * l);
        }
    }
}
