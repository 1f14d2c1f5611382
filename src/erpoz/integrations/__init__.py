"""erpoz inside the ecosystems users already have: LangChain, MCP, Airflow, Kubeflow.

Each integration is a subpackage with its own extra (``pip install 'erpoz[mcp]'``) and is
imported only when used; importing this package imports none of them.
"""
