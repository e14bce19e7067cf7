"""Publishing to the Hugging Face Hub: staging, the remote-code load check, the supported transformers range, upload.

Not remote code: this package imports the flat model files, never the reverse.
"""
