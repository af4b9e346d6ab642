"""What acts on a finished run's output folder: predict, evaluate, push."""
