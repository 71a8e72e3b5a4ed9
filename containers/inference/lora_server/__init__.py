"""A diffusers server for a trained LoRA under the SageMaker hosting contract (`serve`, port 8080)."""
