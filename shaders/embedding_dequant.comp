#version 450
// embedding_dequant: out[t, j] = dequantized element ids[t]·dim + j of a quantized embedding table [vocab, dim] (format
// by define, include/quant.glsl); rows whose id is outside [0, vocab) are zeroed. Writes out.
#include "common.glsl"

#define QUANT_FIRST_BINDING 0
#include "quant_bindings.glsl"
layout(std430, set = 0, binding = 4) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Out { float y[]; };

layout(push_constant) uniform Push
{
    uint count;       // tokens · dim
    uint groups_x;
    uint dim;
    uint vocab;
    uint ids_offset;
    uint out_offset;
    uint q_block;
    uint q_cols;
    float q_offset;
} pc;

#include "quant.glsl"

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i >= pc.count) return;
    uint t = i / pc.dim, j = i - t * pc.dim;
    int id = ids[pc.ids_offset + t];
    y[pc.out_offset + i] = (id < 0 || uint(id) >= pc.vocab) ? 0.0 : q_dequant(uint(id) * pc.dim + j);
}
