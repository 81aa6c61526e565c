#version 450
// fill: dst[i] = value for i < count. Writes (does not accumulate).
#include "common.glsl"

layout(std430, set = 0, binding = 0) writeonly buffer Dst { float dst[]; };

layout(push_constant) uniform Push
{
    uint count;     // elements to write
    uint groups_x;  // workgroups along x in the dispatch grid
    float value;
    uint offset;    // element offset of dst[0] in the binding
} pc;

void main()
{
    uint i = global_index_2d(pc.groups_x);
    if (i < pc.count) dst[pc.offset + i] = pc.value;
}
