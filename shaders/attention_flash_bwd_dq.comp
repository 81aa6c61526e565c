#version 450
// attention_flash_bwd_dq: the query gradient of attention_bwd_dq (same inputs, outputs, push block and chaining: keys
// [lo, hi), the first dispatch writes dq, later ones add; every dispatch writes delta) organised like
// attention_flash_fwd: a workgroup owns FLASH_ROWS query rows (of FLASH_HEADS heads sharing a kv head), blocks of BC
// keys and values stream through shared memory, and S = Q·Kᵀ and dP = dO·Vᵀ are FLASH_ROWS × BC tiles with the head
// dimension split across each row's lanes. With P = exp(S − lse) (from the forward) and D = rowsum(dO ⊙ O):
// dq = scale · (P ⊙ (dP − D))·K. Nothing of size [T, T] is stored; the sums run in a fixed order (deterministic).
#include "attention_flash.glsl"

layout(std430, set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(std430, set = 0, binding = 3) readonly buffer BufO { float o[]; };
layout(std430, set = 0, binding = 4) readonly buffer BufDO { float dout[]; };
layout(std430, set = 0, binding = 5) readonly buffer BufL { float lse[]; };
layout(std430, set = 0, binding = 6) writeonly buffer BufD { float delta[]; };
layout(std430, set = 0, binding = 7) buffer BufDQ { float dq[]; };

shared float ks[BC][HD];
shared float vs[BC][HD];
shared float part_s[FLASH_ROWS][BC][FLASH_TPR];   // per-lane partial scores
shared float part_p[FLASH_ROWS][BC][FLASH_TPR];   // per-lane partial dO·v (and, before the loop, dO·o)

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
