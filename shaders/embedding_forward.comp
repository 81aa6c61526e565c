#version 450
// embedding_forward: y[t, :] = table[ids[t], :] for the tokens whose id lies in this dispatch's table rows
// [row_start, row_start + row_count); with zero_invalid, tokens whose id is outside [0, vocab) get zeros. Writes y.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Table { float table[]; };
layout(std430, set = 0, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float y[]; };

layout(push_constant) uniform Push
{
    uint tokens;
    uint dim;
    uint groups_x;
    int row_start, row_count;   // table rows held by this dispatch's table binding
    int vocab;
    uint zero_invalid;
    uint table_offset, ids_offset, y_offset;   // element offsets inside each binding
} pc;

void main()
{
    uint t = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;   // one workgroup per token
    if (t >= pc.tokens) return;
    int id = ids[pc.ids_offset + t];
    uint yb = pc.y_offset + t * pc.dim;
    if (id >= pc.row_start && id < pc.row_start + pc.row_count)
    {
        uint tb = pc.table_offset + uint(id - pc.row_start) * pc.dim;
        for (uint c = gl_LocalInvocationID.x; c < pc.dim; c += gl_WorkGroupSize.x) y[yb + c] = table[tb + c];
    }
    else if (pc.zero_invalid != 0 && (id < 0 || id >= pc.vocab))
    {
        for (uint c = gl_LocalInvocationID.x; c < pc.dim; c += gl_WorkGroupSize.x) y[yb + c] = 0.0;
    }
}
