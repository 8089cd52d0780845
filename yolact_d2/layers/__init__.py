from .blocks import conv_relu_stack
