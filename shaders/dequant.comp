#version 450
// dequant: out[out_offset + i] = dequantized element (start + i) of a quantized weight, for i < count. Writes out.
// Format by define (include/quant.glsl). Used by tests, export and the dequantize-then-matmul comparison path.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer QCodes { uint qcodes[]; };
#ifdef QDQ
layout(std430, set = 0, binding = 1) readonly buffer QScale { uint qscale[]; };
#else
layout(std430, set = 0, binding = 1) readonly buffer QScale { float qscale[]; };
#endif
layout(std430, set = 0, binding = 2) readonly buffer QAux { float qaux[]; };
layout(std430, set = 0, binding = 3) readonly buffer QMap { float qmap[]; };
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
