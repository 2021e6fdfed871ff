"""Records and formats: BEIR, TREC, rank_llm requests, ir_datasets; candidate-list builders."""

from rankdistill.data.beir import BeirFolder, read_corpus, read_qrels_tsv, read_queries
from rankdistill.data.candidates import candidate_dataset, candidate_lists, needed_documents
from rankdistill.data.rankllm import read_requests, write_requests
from rankdistill.data.records import Candidate, CandidateList, Document, Qrels, Query, Run
from rankdistill.data.trec import read_qrels, read_trec_run, write_trec_run

__all__ = [
    "BeirFolder",
    "Candidate",
    "CandidateList",
    "Document",
    "Qrels",
    "Query",
    "Run",
    "candidate_dataset",
    "candidate_lists",
    "needed_documents",
    "read_corpus",
    "read_qrels",
    "read_qrels_tsv",
    "read_queries",
    "read_requests",
    "read_trec_run",
    "write_requests",
    "write_trec_run",
]
