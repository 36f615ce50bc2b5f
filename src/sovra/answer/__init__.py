"""Answers: retrieval under the asker's permissions, extractive or generated, with checked citations."""

from sovra.answer.service import (
    EXTRACTIVE,
    Answerer,
    AnswerEvent,
    AnswerSettings,
    EndpointInfo,
    GenerationChoice,
)
from sovra.answer.types import NOT_FOUND, Answer, Citation
from sovra.answer.verify import readable

__all__ = [
    "EXTRACTIVE",
    "NOT_FOUND",
    "Answer",
    "AnswerEvent",
    "AnswerSettings",
    "Answerer",
    "Citation",
    "EndpointInfo",
    "GenerationChoice",
    "readable",
]
