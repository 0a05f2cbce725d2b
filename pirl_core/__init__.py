"""PIRL Studio core: services (workspace, ingestion, jobs, evaluation) over a PIRL training engine.

Nothing in this package imports Streamlit.
"""

__version__ = "0.1.0"
