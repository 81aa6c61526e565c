#version 450
// quantize_4bit: NF4 (QFMT_NF4) or FP4 (QFMT_FP4) codes of one block per invocation, bit-exact to quant/Bnb4BitCodec:
// scaled = clamp(x * inv[b], -1, 1) (inv = 1/absmax computed on the host, correctly rounded), code = number of decision
// points strictly below the value (NF4) or CUDA's FP4 thresholds; packed 8 codes per word, element 2k in the high nibble
// of byte k. Writes the block's code words (block_size is a multiple of 8, so blocks own whole words).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Inv { float inv[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Codes { uint codes[]; };

layout(push_constant) uniform Push
{
    uint blocks;
    uint groups_x;
    uint x_offset;      // element offset of the first block's first element in the x binding
    uint block_offset;  // index of the first block in inv, and its first code word is block_offset * block_size / 8
    uint block_size;
    uint count;         // elements in this dispatch
} pc;

uint nf4_code(float v)
{
    const float mid[15] = float[15](
        -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
        -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
        0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
        0.5016634166240692, 0.6427869200706482, 0.8614784181118011);
    uint code = 0u;
    [[unroll]] for (uint k = 0u; k < 15u; k++) code += v > mid[k] ? 1u : 0u;
    return code;
}

uint fp4_code(float v)
{
    uint sign = v < 0.0 ? 8u : 0u;
    float a = abs(v);
    uint m;
    if (a > 0.29166667) m = a > 0.583333 ? (a > 0.8333333 ? 3u : 2u) : (a > 0.4166667 ? 5u : 4u);
    else if (a > 0.0859375) m = a > 0.20833333 ? 7u : 6u;
    else m = a > 0.00260417 ? 1u : 0u;
    return sign + m;
}

void main()
{
    uint b = global_index_2d(pc.groups_x);
    if (b >= pc.blocks) return;
    float s = inv[pc.block_offset + b];
    uint start = b * pc.block_size;
    uint word0 = (pc.block_offset * pc.block_size + start) / 8u;
    for (uint w = 0u; w < pc.block_size / 8u; w++)
    {
        uint e0 = start + w * 8u;
        if (e0 >= pc.count) break;
        uint word = 0u;
        [[unroll]] for (uint j = 0u; j < 8u; j++)
        {
            uint e = e0 + j;
            uint code = 0u;
            if (e < pc.count)
            {
                precise float v = x[pc.x_offset + e] * s;
                v = clamp(v, -1.0, 1.0);
#ifdef QFMT_NF4
                code = nf4_code(v);
#else
                code = fp4_code(v);
#endif
            }
            word |= code << (8u * (j >> 1) + ((j & 1u) == 0u ? 4u : 0u));
        }
        codes[word0 + w] = word;
    }
}
