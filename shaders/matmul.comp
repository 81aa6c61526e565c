#version 450
// matmul: C[M,N] = alpha * A[M,K] · op(B) + beta * C with fp32 accumulators, tiled in shared memory for GPUs. op(B) =
// B[K,N] (TRANS_B 0) or B[N,K]ᵀ (TRANS_B 1, the nn.Linear weight layout). Row strides lda/ldb/ldc and element offsets
// let callers address sub-matrices (split tensors). Writes C when beta == 0, else accumulates. With TRANS_A, A is stored
// [K, M] (element (m, k) at a_offset + k·lda + m): the weight-gradient product Pᵀ·Q of MatMulTn (VEC_A is then unused).
// Outside COOPMAT each output is one fma chain over k in order: deterministic, the same bits for every tile shape.
//
// Tile shape (BM x BN outputs per workgroup, BK along K, TM x TN per invocation) comes from specialization constants the
// runtime picks per device from one table (runtime/Kernels/MatMulTiles.cs); the workgroup has (BM/TM)·(BN/TN)
// invocations. Shared tiles are double-buffered (the next K slice loads while this one is multiplied: one barrier per
// slice) with padded rows (no bank conflicts between the columns invocations read), and A is read as vec4 when VEC_A.
//
// With QUANT_B, B is a quantized weight (include/quant.glsl) decoded into the shared tile; FP16_TILES stores the decoded
// tile as fp16 (A and the accumulators stay fp32). With QWORD (nibble formats) every packed code word is read and decoded
// once per tile by one invocation, all 8 nibbles, and the block scale (with double quantization: code byte, table entry,
// nested scale) once per chunk of CHUNK elements that lies inside one block:
//   TRANS_B 1 (forward x·deq(W)ᵀ): a chunk is BK consecutive K values of one weight row (K and the block multiples of BK);
//   TRANS_B 0 (input gradient dy·deq(W)): a chunk is DX_CHUNK consecutive columns of one weight row (N and the block
//   multiples of DX_CHUNK).
// Other formats and shapes decode element by element (q_dequant).
//
// COOPMAT (VK_NV_cooperative_matrix; built and checked by spirv-val, run only where the device lists 16x16x16 fp16 x
// fp16 -> fp32 subgroup matrices): A and B tiles are stored as fp16, each subgroup multiplies a 32x32 block of the tile
// as 2x2 cooperative 16x16 matrices with fp32 accumulators, and the result goes through shared memory to C (bounds,
// alpha, beta). Each row of A is scaled by a power of two before its fp16 cast and C's row divided by it (main).
// The workgroup holds (BM/32)·(BN/32) subgroups of 32 invocations; BK is a multiple of 16.
#extension GL_EXT_control_flow_attributes : enable
#ifdef COOPMAT
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#define FP16_TILES
#define ATYPE float16_t
#define A_PAD 8u
#else
#define ATYPE float
#define A_PAD 4u
#endif
#ifdef FP16_TILES
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define BTYPE float16_t
#define B_PAD 8u
#else
#define BTYPE float
#define B_PAD 4u
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TRANS_B = 0;
layout(constant_id = 2) const uint BM = 64;
layout(constant_id = 3) const uint BN = 64;
layout(constant_id = 4) const uint BK = 16;
layout(constant_id = 5) const uint TM = 4;
layout(constant_id = 6) const uint TN = 4;
layout(constant_id = 7) const uint VEC_A = 0;   // 1: K, lda and a_offset are multiples of 4

const uint A_STRIDE = BM + A_PAD;
const uint B_STRIDE = BN + B_PAD;
#define DX_CHUNK 32u

layout(std430, set = 0, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, set = 0, binding = 0) readonly buffer BufA4 { vec4 a4[]; };
#ifdef QUANT_B
// B is a quantized weight: element idx of B is q_dequant(b_offset + idx); C is binding 5.
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

shared ATYPE As[2u * BK * A_STRIDE];
#ifdef COOPMAT
// Power-of-two scale of each tile row of A before its fp16 cast, undone at the store (see main).
shared float RowScale[BM];
#define TO_ATYPE(v, r) ATYPE((v) * RowScale[r])
#else
#define TO_ATYPE(v, r) ATYPE(v)
#endif
shared BTYPE Bs[2u * BK * B_STRIDE];

void load_a(uint s, uint row0, uint k0)
{
    uint base = s * BK * A_STRIDE;
#ifdef TRANS_A
    // A[m, k] = a[a_offset + k·lda + m]: the operand is stored [K, M] and read along its rows (m consecutive).
    for (uint idx = gl_LocalInvocationID.x; idx < BM * BK; idx += gl_WorkGroupSize.x)
    {
        uint kk = idx / BM, r = idx % BM;
        uint gr = row0 + r, gk = k0 + kk;
        As[base + kk * A_STRIDE + r] = TO_ATYPE((gr < pc.M && gk < pc.K) ? a[pc.a_offset + gk * pc.lda + gr] : 0.0, r);
    }
#else
    if (VEC_A == 1u)
    {
        uint quads = BM * BK / 4u;
        for (uint idx = gl_LocalInvocationID.x; idx < quads; idx += gl_WorkGroupSize.x)
        {
            uint r = idx / (BK / 4u), kq = (idx % (BK / 4u)) * 4u;
            uint gr = row0 + r, gk = k0 + kq;
            vec4 v = (gr < pc.M && gk < pc.K) ? a4[(pc.a_offset + gr * pc.lda + gk) >> 2] : vec4(0.0);
            As[base + kq * A_STRIDE + r] = TO_ATYPE(v.x, r);
            As[base + (kq + 1u) * A_STRIDE + r] = TO_ATYPE(v.y, r);
            As[base + (kq + 2u) * A_STRIDE + r] = TO_ATYPE(v.z, r);
            As[base + (kq + 3u) * A_STRIDE + r] = TO_ATYPE(v.w, r);
        }
    }
    else
    {
        for (uint idx = gl_LocalInvocationID.x; idx < BM * BK; idx += gl_WorkGroupSize.x)
        {
            uint r = idx / BK, kk = idx % BK;
            uint gr = row0 + r, gk = k0 + kk;
            As[base + kk * A_STRIDE + r] = TO_ATYPE((gr < pc.M && gk < pc.K) ? a[pc.a_offset + gr * pc.lda + gk] : 0.0, r);
        }
    }
#endif
}

#if defined(QUANT_B) && defined(QWORD)
// Decodes `words` code words from word index w0 (one block: scale and bias given) into v (8 values per word).
void decode_words(uint w0, uint words, float scale, float bias, uint base, uint stride, uint first)
{
    for (uint w = 0u; w < words; w++)
    {
        float v[8];
        q_dequant_word(w0 + w, scale, bias, v);
        [[unroll]] for (uint i = 0u; i < 8u; i++) Bs[base + (first + w * 8u + i) * stride] = BTYPE(v[i]);
    }
}
#endif

void load_b(uint s, uint col0, uint k0)
{
    uint base = s * BK * B_STRIDE;
#if defined(QUANT_B) && defined(QWORD)
    if (TRANS_B == 1u)
    {
        // One chunk per weight row n: BK values along K from k0, inside one block (K and the block multiples of BK).
        for (uint n = gl_LocalInvocationID.x; n < BN; n += gl_WorkGroupSize.x)
        {
            uint gn = col0 + n;
            if (gn < pc.N && k0 < pc.K)
            {
                uint e = pc.b_offset + gn * pc.ldb + k0;
                float scale, bias;
                q_block_params(e, scale, bias);
                // Element kk of the chunk goes to Bs[kk][n]: stride B_STRIDE, first row 0, column n.
                decode_words(e >> 3, BK / 8u, scale, bias, base + n, B_STRIDE, 0u);
            }
            else
                for (uint kk = 0u; kk < BK; kk++) Bs[base + kk * B_STRIDE + n] = BTYPE(0.0);
        }
    }
    else
    {
        // Chunks of DX_CHUNK columns of weight row k0 + kk (N and the block multiples of DX_CHUNK).
        uint per_row = BN / DX_CHUNK;
        for (uint idx = gl_LocalInvocationID.x; idx < BK * per_row; idx += gl_WorkGroupSize.x)
        {
            uint kk = idx / per_row, n = (idx % per_row) * DX_CHUNK;
            uint gk = k0 + kk, gn = col0 + n;
            if (gk < pc.K && gn < pc.N)
            {
                uint e = pc.b_offset + gk * pc.ldb + gn;
                float scale, bias;
                q_block_params(e, scale, bias);
                // Element j of the chunk goes to Bs[kk][n + j]: stride 1.
                decode_words(e >> 3, DX_CHUNK / 8u, scale, bias, base + kk * B_STRIDE + n, 1u, 0u);
            }
            else
                for (uint j = 0u; j < DX_CHUNK; j++) Bs[base + kk * B_STRIDE + n + j] = BTYPE(0.0);
        }
    }
#else
    for (uint idx = gl_LocalInvocationID.x; idx < BN * BK; idx += gl_WorkGroupSize.x)
    {
        if (TRANS_B == 0u)
        {
            uint kk = idx / BN, n = idx % BN;
            uint gk = k0 + kk, gn = col0 + n;
            Bs[base + kk * B_STRIDE + n] = BTYPE((gk < pc.K && gn < pc.N) ? LOAD_B(gk * pc.ldb + gn) : 0.0);
        }
        else
        {
            uint n = idx / BK, kk = idx % BK;
            uint gk = k0 + kk, gn = col0 + n;
            Bs[base + kk * B_STRIDE + n] = BTYPE((gk < pc.K && gn < pc.N) ? LOAD_B(gn * pc.ldb + gk) : 0.0);
        }
    }
#endif
}

#ifdef COOPMAT
const uint C_STRIDE = BN + 4u;
shared float Cs[BM * C_STRIDE];
shared uint RowMaxBits[BM];   // largest |A| of each tile row, as float bits (ordered like the values: all are ≥ 0)
#ifdef TRANS_A
#define A_AT(m, k) a[pc.a_offset + (k) * pc.lda + (m)]
#else
#define A_AT(m, k) a[pc.a_offset + (m) * pc.lda + (k)]
#endif

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
    // This subgroup's 32x32 block of the tile.
    uint wm = (gl_SubgroupID / (BN / 32u)) * 32u, wn = (gl_SubgroupID % (BN / 32u)) * 32u;

    // Scale each row of A by a power of two that puts its largest |value| in [2^14, 2^15) before the fp16 cast, and
    // divide it out of C (exact in fp32): input gradients late in training (~1e-8, under fp16's smallest subnormal
    // 6e-8) and activations above fp16's range keep fp16's 11-bit relative precision. One extra pass over the rows.
    for (uint r = tid; r < BM; r += gl_WorkGroupSize.x) RowMaxBits[r] = 0u;
    barrier();
    for (uint r = 0u; r < BM && row0 + r < pc.M; r++)
    {
        uint m = 0u;
        for (uint k = tid; k < pc.K; k += gl_WorkGroupSize.x)
            m = max(m, floatBitsToUint(abs(A_AT(row0 + r, k))));
        atomicMax(RowMaxBits[r], m);
    }
    barrier();
    for (uint r = tid; r < BM; r += gl_WorkGroupSize.x)
    {
        float mx = uintBitsToFloat(RowMaxBits[r]);
        int e;
        frexp(mx, e);   // mx = f·2^e, f in [0.5, 1)
        RowScale[r] = (mx > 0.0 && !isinf(mx) && !isnan(mx)) ? ldexp(1.0, clamp(15 - e, -100, 100)) : 1.0;
    }
    barrier();

    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[2][2];
    [[unroll]] for (uint i = 0u; i < 2u; i++)
        [[unroll]] for (uint j = 0u; j < 2u; j++) acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);

    uint slices = (pc.K + BK - 1u) / BK;
    load_a(0u, row0, 0u);
    load_b(0u, col0, 0u);
    barrier();
    for (uint t = 0u; t < slices; t++)
    {
        uint s = t & 1u;
        if (t + 1u < slices)
        {
            load_a(s ^ 1u, row0, (t + 1u) * BK);
            load_b(s ^ 1u, col0, (t + 1u) * BK);
        }
        uint abase = s * BK * A_STRIDE, bbase = s * BK * B_STRIDE;
        for (uint kk = 0u; kk < BK; kk += 16u)
        {
            // A is stored k-major (element (m, k) at k·A_STRIDE + m): a column-major 16x16 load; B row-major.
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> am[2], bm[2];
            [[unroll]] for (uint i = 0u; i < 2u; i++) coopMatLoadNV(am[i], As, abase + kk * A_STRIDE + wm + 16u * i, A_STRIDE, true);
            [[unroll]] for (uint j = 0u; j < 2u; j++) coopMatLoadNV(bm[j], Bs, bbase + kk * B_STRIDE + wn + 16u * j, B_STRIDE, false);
            [[unroll]] for (uint i = 0u; i < 2u; i++)
                [[unroll]] for (uint j = 0u; j < 2u; j++) acc[i][j] = coopMatMulAddNV(am[i], bm[j], acc[i][j]);
        }
        barrier();
    }

    [[unroll]] for (uint i = 0u; i < 2u; i++)
        [[unroll]] for (uint j = 0u; j < 2u; j++) coopMatStoreNV(acc[i][j], Cs, (wm + 16u * i) * C_STRIDE + wn + 16u * j, C_STRIDE, false);
    barrier();
    for (uint idx = tid; idx < BM * BN; idx += gl_WorkGroupSize.x)
    {
        uint r = idx / BN, cc = idx % BN;
        uint gr = row0 + r, gc = col0 + cc;
        if (gr >= pc.M || gc >= pc.N) continue;
        uint o = pc.c_offset + gr * pc.ldc + gc;
        float v = pc.alpha * (Cs[r * C_STRIDE + cc] / RowScale[r]);
        if (pc.beta != 0.0) v += pc.beta * c[o];
        c[o] = v;
    }
}
#else
void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint tx = tid % (BN / TN), ty = tid / (BN / TN);
    uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;

    float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;

    uint slices = (pc.K + BK - 1u) / BK;
    load_a(0u, row0, 0u);
    load_b(0u, col0, 0u);
    barrier();
    for (uint t = 0u; t < slices; t++)
    {
        uint s = t & 1u;
        // Fill the other buffer with the next slice while this one is multiplied; the barrier below ends both.
        if (t + 1u < slices)
        {
            load_a(s ^ 1u, row0, (t + 1u) * BK);
            load_b(s ^ 1u, col0, (t + 1u) * BK);
        }
        uint abase = s * BK * A_STRIDE, bbase = s * BK * B_STRIDE;
        for (uint kk = 0u; kk < BK; kk++)
        {
            float av[TM], bv[TN];
            [[unroll]] for (uint i = 0; i < TM; i++) av[i] = As[abase + kk * A_STRIDE + ty + i * (BM / TM)];
            [[unroll]] for (uint j = 0; j < TN; j++) bv[j] = float(Bs[bbase + kk * B_STRIDE + tx + j * (BN / TN)]);
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
#endif
