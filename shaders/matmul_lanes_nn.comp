#version 450
// matmul_lanes_nn: C[M,N] = alpha * A[M,K] · B[K,N] + beta * C (B not transposed) for CPU Vulkan devices, like
// matmul_lanes.comp but each lane owns 8 consecutive columns of C (one 4-bit code word of a quantized B row, QWORD), and
// the RB·SG rows of A are broadcast lane by lane from per-lane loads. With QUANT_B, B is a quantized weight used as
// stored ([K,N] = W[out,in], so C = A·deq(W): the input gradient through a frozen layer). Same push block as
// matmul.comp. Writes C when beta == 0, else accumulates.
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable

#ifndef SG
#define SG 8u
#endif
#ifndef RB
#define RB 1u
#endif
layout(local_size_x = SG) in;

layout(std430, set = 0, binding = 0) readonly buffer BufA { float a[]; };
#ifdef QUANT_B
#define QUANT_FIRST_BINDING 1
#include "quant_bindings.glsl"
layout(std430, set = 0, binding = 5) buffer BufC { float c[]; };
#else
layout(std430, set = 0, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, set = 0, binding = 2) buffer BufC { float c[]; };
#endif

#include "matmul_push.glsl"

#ifdef QUANT_B
#include "quant.glsl"
#endif

void main()
{
    uint lane = gl_SubgroupInvocationID;
    uint m0 = gl_WorkGroupID.y * (RB * SG);
    uint col0 = (gl_WorkGroupID.x * SG + lane) * 8u;          // this lane's first column
    uint arow[RB];
    [[unroll]] for (uint r = 0; r < RB; r++) arow[r] = pc.a_offset + min(m0 + r * SG + lane, pc.M - 1) * pc.lda;

    float acc[RB * SG][8];
    [[unroll]] for (uint i = 0; i < RB * SG; i++)
        [[unroll]] for (uint j = 0; j < 8u; j++) acc[i][j] = 0.0;

#if defined(QUANT_B) && defined(QWORD)
    // N and the block are multiples of 8 and col0 is too, so this lane's 8 columns of row k are one code word in one
    // block. The block index walks down the rows by a fixed quotient and remainder of ldb (no division per row); the
    // parameters are decoded once per row and lane, the 8 nibbles of the word at once.
    uint ecol = pc.b_offset + min(col0, pc.N - 8u);
#ifdef QFMT_INT4
    uint blk = ecol / pc.q_block, rem = 0u;                                      // group of (row 0, col); rows add
    uint step_blk = (pc.q_cols + pc.q_block - 1u) / pc.q_block, step_rem = 0u;    // groups per row
#else
    uint blk = ecol / pc.q_block, rem = ecol - blk * pc.q_block;
    uint step_blk = pc.ldb / pc.q_block, step_rem = pc.ldb - step_blk * pc.q_block;
#endif
    uint word = ecol >> 3, step_word = pc.ldb >> 3;
#endif
    for (uint k = 0; k < pc.K; k++)
    {
        float bv[8];
#if defined(QUANT_B) && defined(QWORD)
        float qs, qb;
        q_params_of_block(blk, qs, qb);
        q_dequant_word(word, qs, qb, bv);
        word += step_word;
        blk += step_blk;
        rem += step_rem;
        if (rem >= pc.q_block) { rem -= pc.q_block; blk++; }
#else
        [[unroll]] for (uint j = 0; j < 8u; j++)
        {
            uint ej = min(col0 + j, pc.N - 1) + pc.b_offset + k * pc.ldb;
#ifdef QUANT_B
            bv[j] = q_dequant(ej);
#else
            bv[j] = b[ej];
#endif
        }
#endif
        [[unroll]] for (uint r = 0; r < RB; r++)
        {
            float av = a[arow[r] + k];
            [[unroll]] for (uint s = 0; s < SG; s++)
            {
                float x = subgroupBroadcast(av, s);
                [[unroll]] for (uint j = 0; j < 8u; j++) acc[r * SG + s][j] = fma(x, bv[j], acc[r * SG + s][j]);
            }
        }
    }

    [[unroll]] for (uint i = 0; i < RB * SG; i++)
    {
        uint m = m0 + i;
        if (m >= pc.M) break;
        [[unroll]] for (uint j = 0; j < 8u; j++)
        {
            uint n = col0 + j;
            if (n < pc.N)
            {
                uint o = pc.c_offset + m * pc.ldc + n;
                float v = pc.alpha * acc[i][j];
                if (pc.beta != 0.0) v += pc.beta * c[o];
                c[o] = v;
            }
        }
    }
}
