// Decoding of quantized weights inside shaders, one format per define (the C# spec is quant/): bitsandbytes NF4/FP4
// with fp32 or double-quantized absmax (QFMT_NF4, QFMT_FP4, with QDQ), QA-LoRA INT4 groups (QFMT_INT4), GGUF
// Q4_0/Q4_1/Q8_0 (QFMT_Q4_0, QFMT_Q4_1, QFMT_Q8_0). The includer declares the buffers before including
// (include/quant_bindings.glsl):
//   qcodes[]  uint  packed 4-bit codes (bnb nibble order: element 2k high nibble) or GGUF block bytes
//   qscale[]  float absmax per block (NF4/FP4), scale per group (INT4)      | uint DQ absmax codes (QDQ)
//   qaux[]    float nested absmax per 256 blocks (QDQ), min per group (INT4)
//   qmap[]    float the 256-entry signed dynamic map (QDQ)
// and a push block `pc` with: q_block (block or group size), q_cols (in_features), q_offset (DQ offset).
#ifndef VKPEFT_QUANT_GLSL
#define VKPEFT_QUANT_GLSL

#if defined(QFMT_NF4) || defined(QFMT_FP4) || defined(QFMT_INT4)
#define QFMT_NIBBLES 1
#endif

float q_select(uint q, uint bit, float a, float b) { return ((q >> bit) & 1u) != 0u ? b : a; }

// The 16-entry codebooks as a select tree (no divergent table lookups).
float q_codebook(uint q)
{
#if defined(QFMT_NF4)
    float l00 = q_select(q, 0u, -1.0, -0.6961928009986877);
    float l01 = q_select(q, 0u, -0.5250730514526367, -0.39491748809814453);
    float l02 = q_select(q, 0u, -0.28444138169288635, -0.18477343022823334);
    float l03 = q_select(q, 0u, -0.09105003625154495, 0.0);
    float l04 = q_select(q, 0u, 0.07958029955625534, 0.16093020141124725);
    float l05 = q_select(q, 0u, 0.24611230194568634, 0.33791524171829224);
    float l06 = q_select(q, 0u, 0.44070982933044434, 0.5626170039176941);
    float l07 = q_select(q, 0u, 0.7229568362236023, 1.0);
#else
    // FP4: [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12, indices 8..15 negated.
    float l00 = q_select(q, 0u, 0.0, 0.005208333333333333);
    float l01 = q_select(q, 0u, 0.6666666666666666, 1.0);
    float l02 = q_select(q, 0u, 0.3333333333333333, 0.5);
    float l03 = q_select(q, 0u, 0.16666666666666666, 0.25);
    float l04 = -l00, l05 = -l01, l06 = -l02, l07 = -l03;
#endif
    float l10 = q_select(q, 1u, l00, l01), l11 = q_select(q, 1u, l02, l03);
    float l12 = q_select(q, 1u, l04, l05), l13 = q_select(q, 1u, l06, l07);
    float l20 = q_select(q, 2u, l10, l11), l21 = q_select(q, 2u, l12, l13);
    return q_select(q, 3u, l20, l21);
}

// 4-bit code of element e (bnb order: even element in the high nibble of its byte).
uint q_nibble(uint word, uint e) { return (word >> (8u * ((e >> 1) & 3u) + ((e & 1u) == 0u ? 4u : 0u))) & 15u; }

#if defined(QFMT_NF4) || defined(QFMT_FP4)
// absmax of block b: fp32, or map[code] * nested[b / 256] + offset rounded twice (no fma), as bitsandbytes computes it.
float q_absmax(uint b)
{
#ifdef QDQ
    uint code = (qscale[b >> 2] >> (8u * (b & 3u))) & 255u;
    precise float t = qmap[code] * qaux[b >> 8];
    precise float r = t + pc.q_offset;
    return r;
#else
    return qscale[b];
#endif
}
#endif

#ifdef QFMT_INT4
uint q_group(uint e)
{
    uint row = e / pc.q_cols, col = e - row * pc.q_cols;
    uint groups = (pc.q_cols + pc.q_block - 1u) / pc.q_block;
    return row * groups + col / pc.q_block;
}
#endif

#if defined(QFMT_Q4_0) || defined(QFMT_Q4_1) || defined(QFMT_Q8_0)
uint q_byte(uint b) { return (qcodes[b >> 2] >> (8u * (b & 3u))) & 255u; }
float q_half(uint b) { return unpackHalf2x16(q_byte(b) | (q_byte(b + 1u) << 8)).x; }
#endif

// The dequantized value of flattened element e = row * q_cols + col.
float q_dequant(uint e)
{
#if defined(QFMT_NF4) || defined(QFMT_FP4)
    precise float v = q_codebook(q_nibble(qcodes[e >> 3], e)) * q_absmax(e / pc.q_block);
    return v;
#elif defined(QFMT_INT4)
    uint g = q_group(e);
    precise float t = qscale[g] * float(q_nibble(qcodes[e >> 3], e));
    precise float v = t + qaux[g];
    return v;
#elif defined(QFMT_Q4_0)
    uint blk = e >> 5, j = e & 31u, base = blk * 18u;
    uint byte_ = q_byte(base + 2u + (j & 15u));
    uint q = j < 16u ? (byte_ & 15u) : (byte_ >> 4);
    return (float(q) - 8.0) * q_half(base);
#elif defined(QFMT_Q4_1)
    uint blk = e >> 5, j = e & 31u, base = blk * 20u;
    uint byte_ = q_byte(base + 4u + (j & 15u));
    uint q = j < 16u ? (byte_ & 15u) : (byte_ >> 4);
    precise float t = q_half(base) * float(q);
    precise float v = t + q_half(base + 2u);
    return v;
#elif defined(QFMT_Q8_0)
    uint blk = e >> 5, j = e & 31u, base = blk * 34u;
    int q = int(q_byte(base + 2u + j) << 24) >> 24;
    return float(q) * q_half(base);
#else
#error "no quantization format defined"
#endif
}

#ifdef QFMT_NIBBLES
// Eight consecutive elements 8w..8w+7 (one code word) that share one block/group: scale·code (+ min).
void q_dequant_word(uint w, float scale, float bias, out float v[8])
{
    uint word = qcodes[w];
    [[unroll]] for (uint i = 0u; i < 8u; i++)
    {
        uint q = q_nibble(word, i);
#ifdef QFMT_INT4
        precise float t = scale * float(q);
        precise float r = t + bias;
        v[i] = r;
#else
        precise float r = q_codebook(q) * scale;
        v[i] = r;
#endif
    }
}

// Scale and bias of block/group index b (bias is 0 for NF4/FP4; INT4 groups are numbered row · groups + col / size).
void q_params_of_block(uint b, out float scale, out float bias)
{
#ifdef QFMT_INT4
    scale = qscale[b];
    bias = qaux[b];
#else
    scale = q_absmax(b);
    bias = 0.0;
#endif
}

// Scale and bias of the block/group holding element e (bias is 0 for NF4/FP4).
void q_block_params(uint e, out float scale, out float bias)
{
#ifdef QFMT_INT4
    q_params_of_block(q_group(e), scale, bias);
#else
    q_params_of_block(e / pc.q_block, scale, bias);
#endif
}
#endif

#endif
