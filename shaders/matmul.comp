#version 450
// matmul: C[M,N] = alpha * A[M,K] · op(B) + beta * C, fp32, tiled in shared memory with a TM x TN register tile per
// invocation. op(B) = B[K,N] (TRANS_B 0) or B[N,K]ᵀ (TRANS_B 1, the nn.Linear weight layout). Row strides lda/ldb/ldc
// and element offsets let callers address sub-matrices (split tensors). With QUANT_B, B is a quantized weight decoded
// tile by tile into shared memory (no full-precision copy exists). Writes C when beta == 0, else accumulates.
#extension GL_EXT_control_flow_attributes : enable

layout(constant_id = 1) const uint TRANS_B = 0;

#define WG 256u
#define BM 64u
#define BN 64u
#define BK 16u
#define TM 4u
#define TN 4u
layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer BufA { float a[]; };
#ifdef QUANT_B
// B is a quantized weight (include/quant.glsl): element idx of B is q_dequant(b_offset + idx); C is binding 5.
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
#define LOAD_B(idx) q_dequant(pc.b_offset + (idx))
#else
#define LOAD_B(idx) b[pc.b_offset + (idx)]
#endif

shared float As[BK][BM];
shared float Bs[BK][BN];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint tx = tid % (BN / TN), ty = tid / (BN / TN);
    uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;

    for (uint k0 = 0; k0 < pc.K; k0 += BK)
    {
        [[unroll]] for (uint l = 0; l < BM * BK / WG; l++)
        {
            uint idx = tid + l * WG;
            uint r = idx / BK, kk = idx % BK;
            uint gr = row0 + r, gk = k0 + kk;
            As[kk][r] = (gr < pc.M && gk < pc.K) ? a[pc.a_offset + gr * pc.lda + gk] : 0.0;
        }
        [[unroll]] for (uint l = 0; l < BN * BK / WG; l++)
        {
            uint idx = tid + l * WG;
            if (TRANS_B == 0)
            {
                uint kk = idx / BN, n = idx % BN;
                uint gk = k0 + kk, gn = col0 + n;
                Bs[kk][n] = (gk < pc.K && gn < pc.N) ? LOAD_B(gk * pc.ldb + gn) : 0.0;
            }
            else
            {
                uint n = idx / BK, kk = idx % BK;
                uint gk = k0 + kk, gn = col0 + n;
                Bs[kk][n] = (gk < pc.K && gn < pc.N) ? LOAD_B(gn * pc.ldb + gk) : 0.0;
            }
        }
        barrier();
        [[unroll]] for (uint kk = 0; kk < BK; kk++)
        {
            float av[TM], bv[TN];
            [[unroll]] for (uint i = 0; i < TM; i++) av[i] = As[kk][ty + i * (BM / TM)];
            [[unroll]] for (uint j = 0; j < TN; j++) bv[j] = Bs[kk][tx + j * (BN / TN)];
            [[unroll]] for (uint i = 0; i < TM; i++)
                [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        barrier();
    }

    [[unroll]] for (uint i = 0; i < TM; i++)
    {
        uint gr = row0 + ty + i * (BM / TM);
        if (gr >= pc.M) continue;
        [[unroll]] for (uint j = 0; j < TN; j++)
        {
            uint gc = col0 + tx + j * (BN / TN);
            if (gc >= pc.N) continue;
            uint o = pc.c_offset + gr * pc.ldc + gc;
            float v = pc.alpha * acc[i][j];
            if (pc.beta != 0.0) v += pc.beta * c[o];
            c[o] = v;
        }
    }
}
