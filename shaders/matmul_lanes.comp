#version 450
// matmul_lanes: C[M,N] = alpha * A[M,K] · B[N,K]ᵀ + beta * C for CPU Vulkan devices (lavapipe), where shared memory,
// barriers and per-lane (divergent) buffer loads are expensive but subgroup broadcasts are cheap register shuffles.
// One workgroup is one subgroup of SG lanes and owns an (RB·SG) x (CB·SG) tile of C. At each step along K every lane
// loads RB rows of A and CB rows of B (four K values at once with VEC4), then the A values are broadcast lane by lane
// so each lane accumulates RB·SG x CB outputs in registers. Same push block as matmul.comp (TRANS_B layout only).
// With QUANT_B the weight is decoded from its 4-bit codes in registers, a code word at a time (QWORD) or element by
// element. Writes C when beta == 0, else accumulates.
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable

#ifndef SG
#define SG 8u
#endif
#ifndef RB
#define RB 2u
#endif
#ifndef CB
#define CB 2u
#endif
layout(local_size_x = SG) in;

#if defined(VEC4) || defined(QWORD)
#define ELEM vec4
#define KSTEP 4u
#else
#define ELEM float
#define KSTEP 1u
#endif

layout(std430, set = 0, binding = 0) readonly buffer BufA { ELEM a[]; };
#ifdef QUANT_B
// B is a quantized weight [N,K] (include/quant.glsl); C is binding 5. QWORD: K and the block/group size are multiples
// of 8 and K of the block, so each code word holds 8 elements of one row and one block.
#define QUANT_FIRST_BINDING 1
#include "quant_bindings.glsl"
layout(std430, set = 0, binding = 5) buffer BufC { float c[]; };
#else
layout(std430, set = 0, binding = 1) readonly buffer BufB { ELEM b[]; };
layout(std430, set = 0, binding = 2) buffer BufC { float c[]; };
#endif

#include "matmul_push.glsl"

#ifdef QUANT_B
#include "quant.glsl"
#endif

float dot_elem(ELEM x, ELEM y, float acc)
{
#if defined(VEC4) || defined(QWORD)
    acc = fma(x.x, y.x, acc);
    acc = fma(x.y, y.y, acc);
    acc = fma(x.z, y.z, acc);
    return fma(x.w, y.w, acc);
#else
    return fma(x, y, acc);
#endif
}

void main()
{
    uint lane = gl_SubgroupInvocationID;
    uint m0 = gl_WorkGroupID.y * (RB * SG), n0 = gl_WorkGroupID.x * (CB * SG);

    // Rows of A and B this lane loads (clamped so every load is in range; clamped rows are never stored).
    uint arow[RB], brow[CB];
    [[unroll]] for (uint r = 0; r < RB; r++) arow[r] = (pc.a_offset + min(m0 + r * SG + lane, pc.M - 1) * pc.lda) / KSTEP;
#ifdef QUANT_B
    [[unroll]] for (uint q = 0; q < CB; q++) brow[q] = pc.b_offset + min(n0 + q * SG + lane, pc.N - 1) * pc.ldb;   // element index
#else
    [[unroll]] for (uint q = 0; q < CB; q++) brow[q] = (pc.b_offset + min(n0 + q * SG + lane, pc.N - 1) * pc.ldb) / KSTEP;
#endif

    float acc[RB * SG][CB];
    [[unroll]] for (uint i = 0; i < RB * SG; i++)
        [[unroll]] for (uint q = 0; q < CB; q++) acc[i][q] = 0.0;

#if defined(QUANT_B) && defined(QWORD)
    // Whole code words: 8 K values per step, block parameters reloaded when a block starts (uniform condition).
    float qs[CB], qb[CB];
    uint words = pc.K / 8u;
    for (uint w = 0; w < words; w++)
    {
        if ((w * 8u) % pc.q_block == 0u)
            [[unroll]] for (uint q = 0; q < CB; q++) q_block_params(brow[q] + w * 8u, qs[q], qb[q]);
        float bw[CB][8];
        [[unroll]] for (uint q = 0; q < CB; q++) q_dequant_word((brow[q] >> 3) + w, qs[q], qb[q], bw[q]);
        vec4 alo[RB], ahi[RB];
        [[unroll]] for (uint r = 0; r < RB; r++) { alo[r] = a[arow[r] + 2u * w]; ahi[r] = a[arow[r] + 2u * w + 1u]; }
        [[unroll]] for (uint r = 0; r < RB; r++)
        {
            [[unroll]] for (uint s = 0; s < SG; s++)
            {
                vec4 xl = subgroupBroadcast(alo[r], s), xh = subgroupBroadcast(ahi[r], s);
                [[unroll]] for (uint q = 0; q < CB; q++)
                {
                    float t = acc[r * SG + s][q];
                    t = fma(xl.x, bw[q][0], t); t = fma(xl.y, bw[q][1], t); t = fma(xl.z, bw[q][2], t); t = fma(xl.w, bw[q][3], t);
                    t = fma(xh.x, bw[q][4], t); t = fma(xh.y, bw[q][5], t); t = fma(xh.z, bw[q][6], t); t = fma(xh.w, bw[q][7], t);
                    acc[r * SG + s][q] = t;
                }
            }
        }
    }
#else
    uint steps = pc.K / KSTEP;
    for (uint k = 0; k < steps; k++)
    {
        ELEM av[RB], bv[CB];
        [[unroll]] for (uint r = 0; r < RB; r++) av[r] = a[arow[r] + k];
#ifdef QUANT_B
        [[unroll]] for (uint q = 0; q < CB; q++) bv[q] = q_dequant(brow[q] + k);
#else
        [[unroll]] for (uint q = 0; q < CB; q++) bv[q] = b[brow[q] + k];
#endif
        [[unroll]] for (uint r = 0; r < RB; r++)
        {
            [[unroll]] for (uint s = 0; s < SG; s++)
            {
                ELEM x = subgroupBroadcast(av[r], s);
                [[unroll]] for (uint q = 0; q < CB; q++) acc[r * SG + s][q] = dot_elem(x, bv[q], acc[r * SG + s][q]);
            }
        }
    }
#endif

    [[unroll]] for (uint i = 0; i < RB * SG; i++)
    {
        uint m = m0 + i;
        [[unroll]] for (uint q = 0; q < CB; q++)
        {
            uint n = n0 + q * SG + lane;
            if (m < pc.M && n < pc.N)
            {
                uint o = pc.c_offset + m * pc.ldc + n;
                float v = pc.alpha * acc[i][q];
                if (pc.beta != 0.0) v += pc.beta * c[o];
                c[o] = v;
            }
        }
    }
}
