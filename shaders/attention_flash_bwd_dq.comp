#version 450
// attention_flash_bwd_dq: the query gradient of attention_bwd_dq (same inputs, outputs, push block and chaining: keys
// [lo, hi), the first dispatch writes dq, later ones add; every dispatch writes delta) organised like
// attention_flash_fwd: a workgroup owns FLASH_ROWS query rows (of FLASH_HEADS heads sharing a kv head), blocks of BC
// keys and values stream through shared memory, and S = Q·Kᵀ and dP = dO·Vᵀ are FLASH_ROWS × BC tiles with the head
// dimension split across each row's lanes. With P = exp(S − lse) (from the forward) and D = rowsum(dO ⊙ O):
// dq = scale · (P ⊙ (dP − D))·K. Nothing of size [T, T] is stored; the sums run in a fixed order (deterministic).
// COOPMAT: S = Q·Kᵀ (one subgroup), dP = dO·Vᵀ (the other) and the block's dS·K run as NV cooperative matrices
// (attention_flash_coop.glsl: power-of-two scaled hi/lo fp16 operands, fp32 accumulation); P, dS, D and dq stay fp32.
#include "attention_flash.glsl"
#ifdef COOPMAT
#include "attention_flash_coop.glsl"
#endif

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) readonly buffer BufO { float o[]; };
layout(std430, set = 0, binding = 4) readonly buffer BufDO { float dout[]; };
layout(std430, set = 0, binding = 5) readonly buffer BufL { float lse[]; };
layout(std430, set = 0, binding = 6) writeonly buffer BufD { float delta[]; };
layout(std430, set = 0, binding = 7) buffer BufDQ { float dq[]; };

#ifdef COOPMAT
shared float16_t qh[FLASH_ROWS * HS], ql[FLASH_ROWS * HS];   // scale · q · sq, hi/lo
shared float16_t gh[FLASH_ROWS * HS], gl[FLASH_ROWS * HS];   // dO · sg, hi/lo
shared float16_t kh[CBC * HS], kl[CBC * HS];                 // the key block · sk, hi/lo
shared float16_t vh[CBC * HS], vl[CBC * HS];                 // the value block · sv, hi/lo
shared float st[FLASH_ROWS * FS];                            // the block's scores · sq · sk
shared float dpt[FLASH_ROWS * FS];                           // the block's dP · sg · sv
shared float16_t dst[FLASH_ROWS * TS];                       // the block's dS · sd
shared float cb[FLASH_ROWS * CS];                            // dS·K · sd · sk of the block
shared float dpart[FLASH_WG];                                // per-lane partial dO·o
shared uint amax[8];   // float bits of maxima: q, dO; keys, values, dS by block parity (2..4, 5..7)
#else
shared float ks[BC][HD];
shared float vs[BC][HD];
shared float part_s[FLASH_ROWS][BC][FLASH_TPR];   // per-lane partial scores
shared float part_p[FLASH_ROWS][BC][FLASH_TPR];   // per-lane partial dO·v (and, before the loop, dO·o)
#endif

void main()
{
    uint r = FLASH_R, lane = FLASH_LANE;
    uint h = gl_WorkGroupID.y * FLASH_HEADS + r % FLASH_HEADS, b = gl_WorkGroupID.z, kvh = h / pc.group;
    uint i0 = gl_WorkGroupID.x * FLASH_POSITIONS;
    uint row = i0 + r / FLASH_HEADS;
    uint i = min(row, pc.T - 1);          // rows past T compute a copy of the last row and store nothing
    uint pos = pc.start_pos + i;
    uint kend = min(min(pc.S, pc.hi), pc.start_pos + min(i0 + FLASH_POSITIONS, pc.T));

    uint qbase = (b * pc.T + i) * pc.ldq + h * HD_RT;   // row offset shared by q, o, dO and dq (plus their binding offsets)
    uint kbase = pc.off1 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;
    uint vbase = pc.off2 + b * pc.kv_stride * pc.ldk + kvh * HD_RT;
    uint lrow = (b * pc.n_heads + h) * pc.T + i;

#ifdef COOPMAT
    uint tid = gl_LocalInvocationID.x;
    float qv[FLASH_DPL], gv[FLASH_DPL], acc[FLASH_DPL];
    float dp_o = 0.0, qmax = 0.0, gmax = 0.0;
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint d = FLASH_COL(lane, n);
        bool in_range = d < HD_RT;
        qv[n] = in_range ? q[pc.off0 + qbase + d] * pc.scale : 0.0;
        gv[n] = in_range ? dout[pc.off4 + qbase + d] : 0.0;
        dp_o = fma(gv[n], in_range ? o[pc.off3 + qbase + d] : 0.0, dp_o);
        qmax = max(qmax, abs(qv[n]));
        gmax = max(gmax, abs(gv[n]));
        acc[n] = 0.0;
    }
    dpart[tid] = dp_o;
    if (tid < 8u) amax[tid] = 0u;
    barrier();
    atomicMax(amax[0], floatBitsToUint(qmax));
    atomicMax(amax[1], floatBitsToUint(gmax));
    float dsum = 0.0;
    for (uint t = 0; t < FLASH_TPR; t++) dsum += dpart[r * FLASH_TPR + t];
    barrier();
    float sq = pow2_scale(uintBitsToFloat(amax[0])), sg = pow2_scale(uintBitsToFloat(amax[1]));
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint e = r * HS + FLASH_COL(lane, n);
        STORE_SPLIT(qh, ql, e, qv[n] * sq);
        STORE_SPLIT(gh, gl, e, gv[n] * sg);
    }
    float li = lse[pc.off5 + lrow];

    uint blk = 0u;
    for (uint j0 = pc.lo; j0 < kend; j0 += CBC, blk++)
    {
        uint par = 2u + 3u * (blk & 1u);   // this block's maxima; the other parity's are reset for the next block
        barrier();
        if (tid == 0u) { uint other = 7u - par; amax[other] = 0u; amax[other + 1u] = 0u; amax[other + 2u] = 0u; }
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
        CM_ACC sacc = CM_ACC(0.0);
        if (gl_SubgroupID == 0u)
        {
            MUL_ABT_SPLIT(sacc, qh, ql, 0u, kh, kl, 0u);
            coopMatStoreNV(sacc, st, 0u, FS, false);
        }
        else
        {
            MUL_ABT_SPLIT(sacc, gh, gl, 0u, vh, vl, 0u);
            coopMatStoreNV(sacc, dpt, 0u, FS, false);
        }
        barrier();
        // dS = P ⊙ (dP − D) in fp32 for this lane's columns c ≡ lane (mod FLASH_TPR); its block maximum scales dS to fp16.
        float s_unscale = 1.0 / (sq * sk), dp_unscale = 1.0 / (sg * sv);
        float ds[CBC / FLASH_TPR];
        float dmax = 0.0;
        for (uint u = 0; u < CBC / FLASH_TPR; u++)
        {
            uint c = lane + FLASH_TPR * u;
            float p = j0 + c < kend && j0 + c <= pos ? exp(st[r * FS + c] * s_unscale - li) : 0.0;
            ds[u] = p * (dpt[r * FS + c] * dp_unscale - dsum);
            dmax = max(dmax, abs(ds[u]));
        }
        atomicMax(amax[par + 2u], floatBitsToUint(dmax));
        barrier();
        float sd = pow2_scale(uintBitsToFloat(amax[par + 2u]));
        for (uint u = 0; u < CBC / FLASH_TPR; u++) dst[r * TS + lane + FLASH_TPR * u] = float16_t(ds[u] * sd);
        barrier();
        MUL_AB_SPLIT_TO(cb, dst, kh, kl);
        barrier();
        float unscale = 1.0 / (sd * sk);
        for (uint n = 0; n < FLASH_DPL; n++) acc[n] = fma(cb[r * CS + FLASH_COL(lane, n)], unscale, acc[n]);
    }
#else
    float qr[FLASH_DPL], gr[FLASH_DPL], acc[FLASH_DPL];
    float dpart = 0.0;
    for (uint n = 0; n < FLASH_DPL; n++)
    {
        uint d = FLASH_COL(lane, n);
        bool in_range = d < HD_RT;
        qr[n] = in_range ? q[pc.off0 + qbase + d] * pc.scale : 0.0;
        gr[n] = in_range ? dout[pc.off4 + qbase + d] : 0.0;
        dpart = fma(gr[n], in_range ? o[pc.off3 + qbase + d] : 0.0, dpart);
        acc[n] = 0.0;
    }
    part_p[r][0][lane] = dpart;
    barrier();
    float dsum = 0.0;
    for (uint t = 0; t < FLASH_TPR; t++) dsum += part_p[r][0][t];
    float li = lse[pc.off5 + lrow];

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
            float s = 0.0, dp = 0.0;
            for (uint n = 0; n < FLASH_DPL; n++)
            {
                uint d = FLASH_COL(lane, n);
                s = fma(qr[n], ks[c][d], s);
                dp = fma(gr[n], vs[c][d], dp);
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
            float p = j0 + c < kend && j0 + c <= pos ? exp(s - li) : 0.0;
            float ds = p * (dp - dsum);
            for (uint n = 0; n < FLASH_DPL; n++)
                acc[n] = fma(ds, ks[c][FLASH_COL(lane, n)], acc[n]);
        }
    }

#endif

    if (row < pc.T)
    {
        for (uint n = 0; n < FLASH_DPL; n++)
        {
            uint d = FLASH_COL(lane, n);
            if (d < HD_RT)
                dq[pc.off7 + qbase + d] = acc[n] * pc.scale + (pc.accumulate != 0u ? dq[pc.off7 + qbase + d] : 0.0);
        }
        if (lane == 0u) delta[pc.off6 + lrow] = dsum;
    }
}
