// Shared declarations for every vkpeft compute shader: version, extensions and index helpers.
#ifndef VKPEFT_COMMON_GLSL
#define VKPEFT_COMMON_GLSL

#extension GL_EXT_control_flow_attributes : enable

// Workgroup size is a specialization constant (id 0) so one SPIR-V module serves every device.
layout(local_size_x_id = 0) in;

// Flattened 1-D global index for kernels dispatched as a 2-D grid of workgroups (grid x may be capped by the device).
uint global_index_2d(uint groups_x)
{
    return (gl_WorkGroupID.y * groups_x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
}

#endif
