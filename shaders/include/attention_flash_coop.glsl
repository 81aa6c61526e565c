// Shared pieces of the cooperative-matrix (VK_NV_cooperative_matrix) variants of the flash attention kernels
// (-DCOOPMAT): the workgroup geometry of attention_flash.glsl (FLASH_ROWS = 16 rows, 64 invocations = two 32-wide
// subgroups), blocks of CBC = 16 keys (queries for dk/dv), and the products Q·Kᵀ, dO·Vᵀ, P·V, dS·K, Pᵀ·dO and dSᵀ·Q as
// 16x16x16 fp16 x fp16 -> fp32 subgroup matrices. Everything else (softmax, log-sum-exp, D, the accumulators across
// blocks) stays in fp32.
//
// fp16 range and precision: every operand block staged in fp16 is first multiplied by a power of two that brings its
// largest magnitude into [0.5, 1) (so tiny gradients do not flush to zero and large activations do not overflow), and is
// kept as a hi/lo pair (hi = fp16(x), lo = fp16(x − hi)); products use hi·hi + hi·lo + lo·hi (about 2⁻²¹ relative, so
// scores of magnitude 1e3 keep their softmax accurate). Block products are stored to shared memory in fp32 and divided by
// the exact power-of-two scales there. Probabilities (in [0, 1]) are single fp16 values. Sums run in a fixed order
// (deterministic, no atomics on values; the block maxima use an integer atomicMax, which is order-independent).
#ifndef VKPEFT_ATTENTION_FLASH_COOP_GLSL
#define VKPEFT_ATTENTION_FLASH_COOP_GLSL

#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : enable

#define CBC 16u                // keys (queries for dk/dv) per block: one 16x16 score tile
#define HS (HD + 8u)           // fp16 row stride of a staged [rows][HD] operand (rows stay 16-byte aligned)
#define TS 24u                 // fp16 row stride of a [16][16] tile (P, dS)
#define FS 20u                 // fp32 row stride of a [16][16] tile (scores, dP)
#define CS (HD + 4u)           // fp32 row stride of a [16][HD] block product
#define HD_TILES (HD / 16u)    // 16-column tiles of the head dimension (HD is a multiple of 16)

#define CM_IN fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM_ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

// The power of two that brings a block's largest magnitude m into [0.5, 1) (1 for an all-zero block).
float pow2_scale(float m)
{
    int e;
    frexp(m, e);
    return m > 0.0 ? ldexp(1.0, -e) : 1.0;
}

// Stores x as the hi/lo fp16 pair H[idx], L[idx].
#define STORE_SPLIT(H, L, idx, x) { float x_ = (x); float16_t h_ = float16_t(x_); H[idx] = h_; L[idx] = float16_t(x_ - float(h_)); }

// acc += A·Bᵀ over the head dimension: A and B are [16][HD] hi/lo row blocks at element offsets a0 and b0 (stride HS).
#define MUL_ABT_SPLIT(acc, AH, AL, a0, BH, BL, b0) \
    [[unroll]] for (uint kk_ = 0u; kk_ < HD; kk_ += 16u) \
    { \
        CM_IN ah_, al_, bh_, bl_; \
        coopMatLoadNV(ah_, AH, (a0) + kk_, HS, false); \
        coopMatLoadNV(al_, AL, (a0) + kk_, HS, false); \
        coopMatLoadNV(bh_, BH, (b0) + kk_, HS, true); \
        coopMatLoadNV(bl_, BL, (b0) + kk_, HS, true); \
        acc = coopMatMulAddNV(al_, bh_, acc); \
        acc = coopMatMulAddNV(ah_, bl_, acc); \
        acc = coopMatMulAddNV(ah_, bh_, acc); \
    }

// C[16][HD] = A·B: A a [16][16] fp16 tile (stride TS), B a [16][HD] hi/lo row block (stride HS); this subgroup's 16-column
// tiles of C (every other one) are stored to the fp32 block C (stride CS).
#define MUL_AB_SPLIT_TO(C, A, BH, BL) \
    for (uint t_ = gl_SubgroupID; t_ < HD_TILES; t_ += 2u) \
    { \
        CM_ACC acc_ = CM_ACC(0.0); \
        CM_IN a_, bh_, bl_; \
        coopMatLoadNV(a_, A, 0u, TS, false); \
        coopMatLoadNV(bh_, BH, 16u * t_, HS, false); \
        coopMatLoadNV(bl_, BL, 16u * t_, HS, false); \
        acc_ = coopMatMulAddNV(a_, bl_, acc_); \
        acc_ = coopMatMulAddNV(a_, bh_, acc_); \
        coopMatStoreNV(acc_, C, 16u * t_, CS, false); \
    }

#endif
