#version 450
// copy: dst[dst_offset + i] = src[src_offset + i] for i < count (vec4 granules when VEC4 is defined). Writes.
#include "common.glsl"

#ifdef VEC4
#define ELEM vec4
#else
#define ELEM float
#endif

layout(std430, set = 0, binding = 0) readonly buffer Src { ELEM src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { ELEM dst[]; };

layout(push_constant) uniform Push
{
    uint count;       // elements (or vec4s) to copy
    uint groups_x;
    uint src_offset;
    uint dst_offset;
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i < pc.count) dst[pc.dst_offset + i] = src[pc.src_offset + i];
}
