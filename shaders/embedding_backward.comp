#version 450
// embedding_backward: dtable[v, :] += dy[s, :] for every token s of this dispatch's token piece with ids[s] = v, added in
// token order (deterministic). Accumulates dtable. One workgroup per token t of the whole batch: it acts only when t is
// the first token carrying its id (so each table row has a single writer) and that id lies in this dispatch's table rows.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Ids { int ids[]; };     // all tokens
layout(std430, set = 0, binding = 1) readonly buffer Dy { float dy[]; };     // tokens [piece_start, piece_start + piece_count)
layout(std430, set = 0, binding = 2) buffer DTable { float dtable[]; };      // table rows [row_start, row_start + row_count)

layout(push_constant) uniform Push
{
    uint tokens;
    uint dim;
    uint groups_x;
    int row_start, row_count;
    uint piece_start, piece_count;
    uint ids_offset, dy_offset, table_offset;   // element offsets inside each binding
} pc;

shared int staged[gl_WorkGroupSize.x];

void main()
{
    uint t = gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x;
    uint piece_end = pc.piece_start + pc.piece_count;
    if (t >= pc.tokens || t >= piece_end) return;   // uniform per workgroup
    int id = ids[pc.ids_offset + t];
    if (id < pc.row_start || id >= pc.row_start + pc.row_count) return;
    uint tb = pc.table_offset + uint(id - pc.row_start) * pc.dim;
    // Walk tokens [0, piece_end) in staged chunks; every lane sees the same chunk, so control flow stays uniform.
    for (uint s0 = 0; s0 < piece_end; s0 += gl_WorkGroupSize.x)
    {
        barrier();
        uint s = s0 + gl_LocalInvocationID.x;
        if (s < piece_end) staged[gl_LocalInvocationID.x] = ids[pc.ids_offset + s];
        barrier();
        uint n = min(gl_WorkGroupSize.x, piece_end - s0);
        for (uint j = 0; j < n; j++)
        {
            if (staged[j] != id) continue;
            uint src = s0 + j;
            if (src < t) return;                  // an earlier token owns this row
            if (src < pc.piece_start) continue;   // t itself lies before this piece
            uint db = pc.dy_offset + (src - pc.piece_start) * pc.dim;
            for (uint c = gl_LocalInvocationID.x; c < pc.dim; c += gl_WorkGroupSize.x) dtable[tb + c] += dy[db + c];
        }
    }
}
