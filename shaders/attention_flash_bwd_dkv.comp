#version 450
// attention_flash_bwd_dkv: the key and value gradients of attention_bwd_dkv (same inputs, outputs, push block and
// chaining: query heads [head_lo, head_hi) of the group and query rows [lo, hi); the first dispatch writes dk and dv,
// later ones add) organised like attention_flash_fwd with the roles swapped: a workgroup owns FLASH_ROWS key rows of one
// kv head, blocks of BC query rows (with dO, lse and D) of each query head of its group stream through shared memory,
// and Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ are FLASH_ROWS × BC tiles with the head dimension split across each row's lanes.
// dv = Pᵀ·dO and dk = scale · (P ⊙ (dP − D))ᵀ·Q, summed over heads and query blocks in a fixed order (no atomics).
// Query blocks before the first query that sees the workgroup's first key (below the causal diagonal) are skipped.
// COOPMAT: Sᵀ = K·Qᵀ (one subgroup), dPᵀ = V·dOᵀ (the other) and the block's Pᵀ·dO and dSᵀ·Q run as NV cooperative
// matrices (attention_flash_coop.glsl: power-of-two scaled hi/lo fp16 operands, fp32 accumulation); P, dS, dk, dv fp32.
#include "attention_flash.glsl"
#ifdef COOPMAT
#include "attention_flash_coop.glsl"
#endif

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) readonly buffer BufDO { float dout[]; };
layout(std430, set = 0, binding = 4) readonly buffer BufL { float lse[]; };
layout(std430, set = 0, binding = 5) readonly buffer BufD { float delta[]; };
layout(std430, set = 0, binding = 6) buffer BufDK { float dk[]; };
layout(std430, set = 0, binding = 7) buffer BufDV { float dv[]; };

#ifdef COOPMAT
shared float16_t kh[FLASH_ROWS * HS], kl[FLASH_ROWS * HS];   // scale · k · sk, hi/lo
shared float16_t vh[FLASH_ROWS * HS], vl[FLASH_ROWS * HS];   // v · sv, hi/lo
shared float16_t qh[CBC * HS], ql[CBC * HS];                 // the query block · sq, hi/lo
shared float16_t gh[CBC * HS], gl[CBC * HS];                 // the dO block · sg, hi/lo
shared float st[FLASH_ROWS * FS];                            // the block's Sᵀ · sk · sq
shared float dpt[FLASH_ROWS * FS];                           // the block's dPᵀ · sv · sg
shared float16_t pt[FLASH_ROWS * TS];                        // the block's Pᵀ
shared float16_t dst[FLASH_ROWS * TS];                       // the block's dSᵀ · sd
shared float cb[FLASH_ROWS * CS];                            // Pᵀ·dO · sg, then dSᵀ·Q · sd · sq
shared float ls[CBC];
shared float dls[CBC];
shared uint amax[8];   // float bits of maxima: k, v; queries, dO, dS by block parity (2..4, 5..7)
#else
shared float qs[BC][HD];
shared float gs[BC][HD];
shared float ls[BC];
shared float dls[BC];
shared float part_s[FLASH_ROWS][BC][FLASH_TPR];   // per-lane partial scores k·q
shared float part_p[FLASH_ROWS][BC][FLASH_TPR];   // per-lane partial v·dO
#endif

void main()
{
    uint kvh = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
    uint r = FLASH_R, lane = FLASH_LANE;
    uint j0 = gl_WorkGroupID.x * FLASH_ROWS;
    uint krow = j0 + r;
    uint j = min(krow, pc.kv_stride - 1);   // rows past kv_stride compute a copy of the last row and store nothing
    uint rbase = (b * pc.kv_stride + j) * pc.ldk + kvh * HD_RT;

#ifdef COOPMAT
    uint tid = gl_LocalInvocationID.x;
    float kv_[FLASH_DPL], vv_[FLASH_DPL], acck[FLASH_DPL], accv[FLASH_DPL];
    float kmax = 0.0, vmax = 0.0;
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint d = FLASH_COL(lane, n);
        bool in_range = d < HD_RT;
        kv_[n] = in_range ? k[pc.off1 + rbase + d] * pc.scale : 0.0;
        vv_[n] = in_range ? v[pc.off2 + rbase + d] : 0.0;
        kmax = max(kmax, abs(kv_[n]));
        vmax = max(vmax, abs(vv_[n]));
        acck[n] = 0.0;
        accv[n] = 0.0;
    }
    if (tid < 8u) amax[tid] = 0u;
    barrier();
    atomicMax(amax[0], floatBitsToUint(kmax));
    atomicMax(amax[1], floatBitsToUint(vmax));
    barrier();
    float sk = pow2_scale(uintBitsToFloat(amax[0])), sv = pow2_scale(uintBitsToFloat(amax[1]));
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint e = r * HS + FLASH_COL(lane, n);
        STORE_SPLIT(kh, kl, e, kv_[n] * sk);
        STORE_SPLIT(vh, vl, e, vv_[n] * sv);
    }

    uint istart = max(pc.lo, j0 > pc.start_pos ? j0 - pc.start_pos : 0u);
    uint blk = 0u;
    for (uint hh = pc.head_lo; hh < pc.head_hi; hh++)
    {
        uint h = kvh * pc.group + hh;
        uint qbase = pc.off0 + b * pc.T * pc.ldq + h * HD_RT;
        uint gbase = pc.off3 + b * pc.T * pc.ldq + h * HD_RT;
        uint lbase = pc.off4 + (b * pc.n_heads + h) * pc.T;
        uint dbase = pc.off5 + (b * pc.n_heads + h) * pc.T;
        for (uint i0 = istart; i0 < pc.hi; i0 += CBC, blk++)
        {
            uint par = 2u + 3u * (blk & 1u);   // this block's maxima; the other parity's are reset for the next block
            barrier();
            if (tid == 0u) { uint other = 7u - par; amax[other] = 0u; amax[other + 1u] = 0u; amax[other + 2u] = 0u; }
            float mq = 0.0, mg = 0.0;
            for (uint e = tid; e < CBC * HD; e += FLASH_WG)
            {
                uint c = e / HD, d = e % HD, i = i0 + c;
                if (i < pc.hi && d < HD_RT)
                {
                    mq = max(mq, abs(q[qbase + i * pc.ldq + d]));
                    mg = max(mg, abs(dout[gbase + i * pc.ldq + d]));
                }
            }
            atomicMax(amax[par], floatBitsToUint(mq));
            atomicMax(amax[par + 1u], floatBitsToUint(mg));
            if (tid < CBC)
            {
                uint c = tid;
                bool in_range = i0 + c < pc.hi;
                ls[c] = in_range ? lse[lbase + i0 + c] : 0.0;
                dls[c] = in_range ? delta[dbase + i0 + c] : 0.0;
            }
            barrier();
            float sq = pow2_scale(uintBitsToFloat(amax[par])), sg = pow2_scale(uintBitsToFloat(amax[par + 1u]));
            for (uint e = tid; e < CBC * HD; e += FLASH_WG)
            {
                uint c = e / HD, d = e % HD, i = i0 + c;
                bool in_range = i < pc.hi && d < HD_RT;
                STORE_SPLIT(qh, ql, c * HS + d, in_range ? q[qbase + i * pc.ldq + d] * sq : 0.0);
                STORE_SPLIT(gh, gl, c * HS + d, in_range ? dout[gbase + i * pc.ldq + d] * sg : 0.0);
            }
            barrier();
            CM_ACC sacc = CM_ACC(0.0);
            if (gl_SubgroupID == 0u)
            {
                MUL_ABT_SPLIT(sacc, kh, kl, 0u, qh, ql, 0u);
                coopMatStoreNV(sacc, st, 0u, FS, false);
            }
            else
            {
                MUL_ABT_SPLIT(sacc, vh, vl, 0u, gh, gl, 0u);
                coopMatStoreNV(sacc, dpt, 0u, FS, false);
            }
            barrier();
            // Pᵀ and dSᵀ = Pᵀ ⊙ (dPᵀ − D) in fp32 for this lane's query columns c ≡ lane (mod FLASH_TPR).
            float s_unscale = 1.0 / (sk * sq), dp_unscale = 1.0 / (sv * sg);
            float ds[CBC / FLASH_TPR];
            float dmax = 0.0;
            for (uint u = 0; u < CBC / FLASH_TPR; u++)
            {
                uint c = lane + FLASH_TPR * u;
                float p = i0 + c < pc.hi && pc.start_pos + i0 + c >= j ? exp(st[r * FS + c] * s_unscale - ls[c]) : 0.0;
                pt[r * TS + c] = float16_t(p);
                ds[u] = p * (dpt[r * FS + c] * dp_unscale - dls[c]);
                dmax = max(dmax, abs(ds[u]));
            }
            atomicMax(amax[par + 2u], floatBitsToUint(dmax));
            barrier();
            float sd = pow2_scale(uintBitsToFloat(amax[par + 2u]));
            for (uint u = 0; u < CBC / FLASH_TPR; u++) dst[r * TS + lane + FLASH_TPR * u] = float16_t(ds[u] * sd);
            MUL_AB_SPLIT_TO(cb, pt, gh, gl);
            barrier();
            float gunscale = 1.0 / sg;
            for (uint n = 0; n < FLASH_DPL; n++) accv[n] = fma(cb[r * CS + FLASH_COL(lane, n)], gunscale, accv[n]);
            barrier();
            MUL_AB_SPLIT_TO(cb, dst, qh, ql);
            barrier();
            float kunscale = 1.0 / (sd * sq);
            for (uint n = 0; n < FLASH_DPL; n++) acck[n] = fma(cb[r * CS + FLASH_COL(lane, n)], kunscale, acck[n]);
        }
    }
#else
    float kr[FLASH_DPL], vr[FLASH_DPL], acck[FLASH_DPL], accv[FLASH_DPL];
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint d = FLASH_COL(lane, n);
        bool in_range = d < HD_RT;
        kr[n] = in_range ? k[pc.off1 + rbase + d] * pc.scale : 0.0;
        vr[n] = in_range ? v[pc.off2 + rbase + d] : 0.0;
        acck[n] = 0.0;
        accv[n] = 0.0;
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
            barrier();
            for (uint e = gl_LocalInvocationID.x; e < BC * HD; e += FLASH_WG)
            {
                uint c = e / HD, d = e % HD, i = i0 + c;
                bool in_range = i < pc.hi && d < HD_RT;
                qs[c][d] = in_range ? q[qbase + i * pc.ldq + d] : 0.0;
                gs[c][d] = in_range ? dout[gbase + i * pc.ldq + d] : 0.0;
            }
            if (gl_LocalInvocationID.x < BC)
            {
                uint c = gl_LocalInvocationID.x;
                bool in_range = i0 + c < pc.hi;
                ls[c] = in_range ? lse[lbase + i0 + c] : 0.0;
                dls[c] = in_range ? delta[dbase + i0 + c] : 0.0;
            }
            barrier();
            [[dont_unroll]] for (uint c = 0; c < BC; c++)
            {
                float s = 0.0, dp = 0.0;
                for (uint n = 0; n < FLASH_DPL; n++)
                {
                    uint d = FLASH_COL(lane, n);
                    s = fma(kr[n], qs[c][d], s);
                    dp = fma(vr[n], gs[c][d], dp);
                }
                part_s[r][c][lane] = s;
                part_p[r][c][lane] = dp;
            }
            barrier();
            [[dont_unroll]] for (uint c = 0; c < BC; c++)
            {
                float s = 0.0, dp = 0.0;
                for (uint t = 0; t < FLASH_TPR; t++)
                {
                    s += part_s[r][c][t];
                    dp += part_p[r][c][t];
                }
                float p = i0 + c < pc.hi && pc.start_pos + i0 + c >= j ? exp(s - ls[c]) : 0.0;
                float ds = p * (dp - dls[c]);
                for (uint n = 0; n < FLASH_DPL; n++)
                {
                    uint d = FLASH_COL(lane, n);
                    accv[n] = fma(p, gs[c][d], accv[n]);
                    acck[n] = fma(ds, qs[c][d], acck[n]);
                }
            }
        }
    }

#endif

    if (krow < pc.kv_stride)
    {
        for (uint n = 0; n < FLASH_DPL; n++)
        {
            uint d = FLASH_COL(lane, n);
            if (d < HD_RT)
            {
                float gk = acck[n] * pc.scale, gv = accv[n];
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
}
