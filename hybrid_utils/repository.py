"""Where the tutorial lives: the repository every Colab badge, install cell and results download names.

:mod:`hybrid_utils.notebook` re-exports these (``hybrid_utils.notebook.REPOSITORY_URL``); they are here, in a
module that imports nothing, so that :mod:`hybrid_utils.committed_results` can use them too.
"""

#: The repository every Colab badge opens and every notebook's first cell installs from.
REPOSITORY_URL = "https://github.com/hybrid-batch-tutorials/hybrid-batch-tutorials"
#: The branch the badges open (and whose committed results a Colab session downloads).
REPOSITORY_BRANCH = "main"
#: The package's distribution name (pyproject.toml), as the install cell names it.
DISTRIBUTION = "hybrid-batch-tutorials"
