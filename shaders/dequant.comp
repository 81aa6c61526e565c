#version 450
// dequant: out[out_offset + i] = dequantized element (start + i) of a quantized weight, for i < count. Writes out.
// Format by define (include/quant.glsl). Used by tests, export and the dequantize-then-matmul comparison path.
#include "common.glsl"

#define QUANT_FIRST_BINDING 0
#include "quant_bindings.glsl"
layout(std430, set = 0, binding = 4) writeonly buffer Out { float y[]; };

layout(push_constant) uniform Push
{
    uint count;
    uint groups_x;
    uint out_offset;
    uint start;
    uint q_block;
    uint q_cols;
    float q_offset;
} pc;

#include "quant.glsl"

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i < pc.count) y[pc.out_offset + i] = q_dequant(pc.start + i);
}
