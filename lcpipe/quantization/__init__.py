"""Every NNCF call lcpipe makes; the quantize and plan stages and sensitivity all come here.

settings           preset choice, nncf.quantize keyword arguments, ignored scopes merged in one place
ptq                the calibration dataset, nncf.quantize, accuracy control, saving an INT8 IR
shared_statistics  several PTQ configurations from one statistics pass (NNCF internals, pinned)
graph              the one walk over an OpenVINO graph that finds quantizable and quantized ops

nncf is imported inside the functions (``lcpipe --help`` stays instant), and only here.
"""
