from .blocks import conv_relu_stack
from .norm import ChannelsLastGroupNorm, convert_group_norms
from .deform_conv import DeformConv, ModulatedDeformConv, detectron2_deform_ops_available, sampled_deform_conv2d
from .tracing import is_tracing
from .input_region import input_region
from .precision import PRECISIONS, cpu_has_native_bfloat16, inference_autocast, resolve_precision
