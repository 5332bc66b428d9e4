"""The jobs list's free-text search, index-backed on PostgreSQL without making capture writes dearer.

A term matches a job when any of these holds:

- it is the job's task id (exact);
- it is part of the task name or of the exception type (case-insensitive substring). These columns hold a
  few dozen distinct values, so the term is matched against those values in Python first (a loose index
  scan lists them) and the rows are found with ``IN (...)`` through the columns' indexes;
- every word of the term is a word of the arguments, the keyword arguments (keys and values) or the
  exception message, and its last word may be the beginning of one unless it is a number (full-text
  search, PostgreSQL's ``simple`` configuration: no stemming, no stop words, lower-cased). Words are
  split the way PostgreSQL's text-search parser splits them: an email address, a host name or a dotted
  number is one word (``user7@example.com``), other punctuation separates words (``done_ok`` is ``done``
  and ``ok``). A term without blanks (and not a number) also matches as the beginning of one word, so
  ``ann@example`` finds ``ann@example.com``. The words may come from different fields of the job.

Why not substring search over the arguments: a trigram index made every capture write 40-100% dearer
(each capture upsert is a non-HOT update that re-inserts all of a row's index entries) and common
trigrams kept searches slow (bench/RESULTS.md). The full-text index here is partial on finished rows, so a
row enters it once, when it finishes; the few unfinished rows are matched through the ``finished_at``
index. On databases other than PostgreSQL the search is a plain substring match on each
field (unindexed).
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.db import connections
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from . import metrics
from .models import JobRun

INDEX_NAME = "jobrun_search_idx"
# Distinct task names / exception types matched in Python; past this many the column is scanned instead.
MAX_DISTINCT = 1_000
# The recent window a newest-first page of a common term is looked for in first. Wider windows cost more
# than they save: intersecting with the created_at index reads every index entry of the window (50 ms for
# a day of a 10M-row month on two cores).
WINDOW = timedelta(hours=6)
# Unfinished matches looked up first and passed by id; past this many they are matched in the page query.
MAX_ACTIVE_IDS = 1_000

# The words of a job (migration 0006_search defines the function and its index). The planner uses an
# expression index only for a query that repeats the expression exactly.
DOCUMENT = "monitoring_jobrun_search_document(exception_message, args, kwargs)"
# The same words computed inline, for the unfinished rows the partial index leaves out. It must differ
# from DOCUMENT: PostgreSQL rewrites "(a AND m) OR (b AND m)" into "m AND (a OR b)", which no partial
# index can answer.
ACTIVE_DOCUMENT = ("(COALESCE(jsonb_to_tsvector('simple'::regconfig, args, '\"all\"'::jsonb), ''::tsvector)"
                   " || COALESCE(jsonb_to_tsvector('simple'::regconfig, kwargs, '\"all\"'::jsonb), ''::tsvector)"
                   " || to_tsvector('simple'::regconfig, exception_message))")
# The term's words, the last one as a prefix unless it is a number: plainto_tsquery splits the term with
# the same parser as the documents ("'a' & 'b'"), and ":*" goes after a final lexeme with a non-digit.
# Earlier words and numbers stay whole: a prefix of a common word ("query:*") or of a number ("996:*",
# every id from 996 to 9969999) makes the index read every posting list it starts.
_WORDS_QUERY = (r"regexp_replace(plainto_tsquery('simple'::regconfig, %s)::text, "
                r"'''([^'']*[^0-9''][^'']*)''$', '''\1'':*')::tsquery")
_NUMBER = re.compile("[0-9]+")


def _has_word(term: str) -> bool:
    # Without a letter or digit the parser finds no word: an empty query, which matches nothing and makes
    # PostgreSQL log a notice per row.
    return any(ch.isalnum() for ch in term)


def _whole_term_lexeme(term: str) -> str:
    """``term`` lower-cased as one quoted tsquery prefix lexeme (quotes doubled, backslashes escaped)."""
    return "'" + term.lower().replace("\\", "\\\\").replace("'", "''") + "':*"


def text_query(term: str) -> tuple[str, list[str]]:
    """SQL (and parameters) of the tsquery that finds ``term``'s words (the last one as a prefix)."""
    if any(ch.isspace() for ch in term) or _NUMBER.fullmatch(term):
        return _WORDS_QUERY, [term]
    # Where the parser keeps the term as one word (an email address, a host name), both halves are the same
    # prefix, and each copy made the index read every matching posting list once more (6.5 -> 11 ms for a
    # term in 10,000 rows at 10M). The CASE compares two constants: PostgreSQL folds it while planning.
    whole = _whole_term_lexeme(term)
    return (f"(CASE WHEN {_WORDS_QUERY} = %s::tsquery THEN %s::tsquery ELSE {_WORDS_QUERY} || %s::tsquery END)",
            [term, whole, whole, term, whole])


def _matches(document: str, term: str) -> Q:
    sql, params = text_query(term)
    return Q(RawSQL(f"{document} @@ {sql}", params, output_field=BooleanField()))


def _containing(column: str, term: str) -> Q | None:
    """Rows whose ``column`` contains ``term``: ``IN`` over the matching distinct values, None if none match."""
    values = metrics.distinct_values(column, limit=MAX_DISTINCT + 1)
    if len(values) > MAX_DISTINCT:  # not the low-cardinality column this plan assumes: scan it
        return Q(**{f"{column}__icontains": term})
    needle = term.lower()
    matching = [value for value in values if needle in value.lower()]
    return Q(**{f"{column}__in": matching}) if matching else None


def _unfinished_matches(qs: QuerySet[JobRun], term: str) -> Q:
    """The unfinished rows whose words match, by id when few (found through the ``finished_at`` index).

    Passing ids keeps every branch of the search an exact index condition, so PostgreSQL need not re-check
    the whole condition on each row the full-text index found, which would recompute the row's words.
    """
    condition = Q(finished_at__isnull=True) & _matches(ACTIVE_DOCUMENT, term)
    ids = list(JobRun.objects.using(qs.db).filter(condition).order_by().values_list("id", flat=True)
               [:MAX_ACTIVE_IDS + 1])
    return condition if len(ids) > MAX_ACTIVE_IDS else Q(id__in=ids)


def search_jobs(qs: QuerySet[JobRun], term: str) -> QuerySet[JobRun]:
    """Filter ``qs`` to the jobs ``term`` matches (see the module docstring for the rules); blank: all."""
    term = term.strip()
    if not term:
        return qs
    if connections[qs.db].vendor != "postgresql":
        return qs.filter(Q(task_id=term) | Q(task_name__icontains=term) | Q(exception_type__icontains=term)
                         | Q(exception_message__icontains=term) | Q(args__icontains=term)
                         | Q(kwargs__icontains=term))
    # Cheap branches first: where the planner walks the created_at index and filters (common terms), a row
    # computes its words only when no other branch matched it.
    condition = Q(task_id=term)
    branches = []  # querysets of the indexed value branches, for capped_count
    names = _containing("task_name", term)
    if names is not None:
        condition |= names
        branches.append(qs.filter(names))
    types = _containing("exception_type", term)
    if types is not None:  # IN over non-empty values: the partial exception-type index answers it
        condition |= types
        branches.append(qs.filter(types))
    if _has_word(term):
        condition |= _unfinished_matches(qs, term)
        condition |= Q(finished_at__isnull=False) & _matches(DOCUMENT, term)
    found = qs.filter(condition)
    # On the query, which every clone copies: for is_search() and capped_count().
    found.query.jobrun_search = True
    found.query.jobrun_search_branches = branches
    return found


def capped_count(qs: QuerySet[JobRun], cap: int) -> int:
    """How many rows a search matches, counted up to ``cap + 1``.

    A task-name or exception-type branch with more than ``cap`` rows decides it alone, counted on its own
    index without reading the table; counting the whole condition reads a random heap row per match (a
    bitmap of all of them first: 0.1-0.2 s for ``DeliveryError`` at 10M rows).
    """
    for branch in getattr(qs.query, "jobrun_search_branches", ()):
        counted = branch.order_by()[:cap + 1].count()
        if counted > cap:
            return counted
    return qs.order_by()[:cap + 1].count()


def is_search(qs: QuerySet[JobRun]) -> bool:
    """Whether ``qs`` went through :func:`search_jobs` (the mark rides on the query, so clones keep it)."""
    return getattr(qs.query, "jobrun_search", False)


def newest_first(qs: QuerySet[JobRun], offset: int, count: int) -> list[JobRun]:
    """Rows ``offset`` to ``offset + count`` of a search ordered by ``-created_at``, the recent window first.

    A term matching thousands of rows spread over a month would otherwise make PostgreSQL fetch and sort
    all of them for one page (each a random heap read). Limited to the window, the index intersection reads
    only the window's matches; a full window holds the newest matches, as every row outside it is older.
    """
    rows = list(qs.filter(created_at__gte=timezone.now() - WINDOW)[offset:offset + count])
    return rows if len(rows) == count else list(qs[offset:offset + count])
