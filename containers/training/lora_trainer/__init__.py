"""SageMaker training entrypoint for kohya-ss sd-scripts LoRA training."""
