#version 450
// absmax_blocks: absmax[b] = max |x[i]| over block b (block_size consecutive elements of the flattened weight; the last
// block may be partial), one invocation per block — the first pass of quantizing a weight on the device. Writes absmax.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Absmax { float absmax[]; };

layout(push_constant) uniform Push
{
    uint blocks;        // blocks in this dispatch
    uint groups_x;
    uint x_offset;      // element offset of the first block's first element in the x binding
    uint absmax_offset; // index of the first block in the absmax binding
    uint block_size;
    uint count;         // elements in this dispatch (the last block may be partial)
} pc;

void main()
{
    uint b = global_index_2d(pc.groups_x);
    if (b >= pc.blocks) return;
    uint start = b * pc.block_size, end = min(start + pc.block_size, pc.count);
    float m = 0.0;
    for (uint i = start; i < end; i++)
    {
        float a = abs(x[pc.x_offset + i]);
        if (!(a <= 3.4028234e38)) { m = a; break; }   // NaN or Inf: reported to the host as the block's absmax
        m = max(m, a);
    }
    absmax[pc.absmax_offset + b] = m;
}
