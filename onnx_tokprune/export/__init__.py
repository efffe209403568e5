"""Export: torch -> ONNX with TokenPrune nodes."""
