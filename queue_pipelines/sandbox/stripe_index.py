"""An index of localstripe's store, so the Stripe sandbox answers in constant time as it grows.

localstripe 1.15 keeps every object in one dict keyed "<object>:<id>" and answers every
listing by walking all of it (`StripeObject._api_list_all`). The calls the project makes walk
it many times each: a PaymentIntent's answer exports its charge, and the charge's `refunds`,
`amount_refunded` and `refunded` are each a listing of refunds, so one create-and-confirm
walked the store about 16 times (through the `payment_intent.succeeded` event's copy too). A
burst's per-payment cost grew from ~4 ms on an empty store to ~38 ms at 2,000 payments (14,500
entries), and the sandbox, not the pipeline, set the bench's pace. Stripe's own API answers
these lookups from indexes; so does the sandbox now:

- the store keeps, per object type, its entries in store order, and for the fields the project
  looks objects up by (a customer's `email`, a PaymentIntent's `customer`, a refund's
  `charge`), the entries holding each value. It is kept on every store write and delete, and on
  every write of an indexed field: localstripe stores an object first and sets its fields
  after, and an update may change them;
- a listing takes its candidates from the index: the entries of its type, or only those with
  the value the request names. localstripe's own code then checks, filters and orders them as
  before, so every answer is the one the walk gave.

`StoreIndex.visited` counts the entries listings took from the index and the entries any walk
of the whole store touched (the state file's dump is one): tests assert on it, since a test
never asserts a time. `GET /_config/store_index` reports it (sandbox only, like localstripe's
other `/_config/` routes).

Install after `stripe_listing.install()` (this wraps the PaymentIntent listing that installs)
and before the state file is loaded (the load goes through the indexed store).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Hashable, ItemsView, Iterator, KeysView, ValuesView
from typing import Any

import localstripe.resources as ls
from aiohttp import web

# The fields a listing of the project's looks objects up by, per object type.
INDEXED_FIELDS: dict[str, tuple[str, ...]] = {
    "customer": ("email",),
    "payment_intent": ("customer",),
    "refund": ("charge",),
}

_ABSENT = object()


def _object_type(key: Any) -> str | None:
    """The type an entry is listed under: localstripe lists by the key's "<object>:" prefix.
    Entries without one (its balance, the idempotency records) are in no listing."""
    if isinstance(key, str) and ":" in key:
        return key.partition(":")[0]
    return None


class StoreIndex:
    def __init__(self) -> None:
        # object type -> {store key: object}, in store order
        self.by_type: dict[str, dict[str, Any]] = {}
        # (object type, field) -> {value: {store key: object}}
        self.by_field: dict[tuple[str, str], dict[Hashable, dict[str, Any]]] = {}
        # store key -> its place in store order (a field's bucket is sorted by it)
        self._order: dict[str, int] = {}
        self._counter = itertools.count()
        # object type -> (field, value): the next listing of that type takes only these
        self._narrowed: dict[str, tuple[str, Hashable]] = {}
        self.visited = 0

    # -- upkeep ---------------------------------------------------------------------------

    def added(self, key: Any, value: Any) -> None:
        object_type = _object_type(key)
        if object_type is None:
            return
        self._order.setdefault(key, next(self._counter))
        self.by_type.setdefault(object_type, {})[key] = value
        fields = vars(value) if hasattr(value, "__dict__") else {}
        for field in INDEXED_FIELDS.get(object_type, ()):
            self._file(object_type, field, fields.get(field, _ABSENT), key, value)

    def replaced(self, key: Any, old: Any, new: Any) -> None:
        """`store[key] = new` over `old`: the entry keeps its place, as in a dict."""
        object_type = _object_type(key)
        if object_type is None:
            return
        self.by_type.setdefault(object_type, {})[key] = new
        old_fields = vars(old) if hasattr(old, "__dict__") else {}
        new_fields = vars(new) if hasattr(new, "__dict__") else {}
        for field in INDEXED_FIELDS.get(object_type, ()):
            self._unfile(object_type, field, old_fields.get(field, _ABSENT), key)
            self._file(object_type, field, new_fields.get(field, _ABSENT), key, new)

    def removed(self, key: Any, value: Any) -> None:
        object_type = _object_type(key)
        if object_type is None:
            return
        self._order.pop(key, None)
        entries = self.by_type.get(object_type)
        if entries is not None:
            entries.pop(key, None)
        fields = vars(value) if hasattr(value, "__dict__") else {}
        for field in INDEXED_FIELDS.get(object_type, ()):
            self._unfile(object_type, field, fields.get(field, _ABSENT), key)

    def cleared(self) -> None:
        self.by_type.clear()
        self.by_field.clear()
        self._order.clear()

    def field_changed(self, obj: Any, field: str, old: Any, new: Any) -> None:
        """`obj.field` went from `old` to `new`: move it between buckets if it is stored."""
        object_type = getattr(obj, "object", None)
        key = f"{object_type}:{getattr(obj, 'id', None)}"
        if self.by_type.get(object_type, {}).get(key) is not obj:
            return  # not (or not yet) in the store: `added` files it when it gets there
        self._unfile(object_type, field, old, key)
        self._file(object_type, field, new, key, obj)

    def _file(self, object_type: str, field: str, value: Any, key: str, obj: Any) -> None:
        # An unhashable value (never one localstripe accepts for these fields) cannot equal
        # the string a request names, so it is in no bucket and no lookup misses it.
        if value is _ABSENT or value is None or not isinstance(value, Hashable):
            return
        with contextlib.suppress(TypeError):  # a tuple holding a list
            buckets = self.by_field.setdefault((object_type, field), {})
            buckets.setdefault(value, {})[key] = obj

    def _unfile(self, object_type: str, field: str, value: Any, key: str) -> None:
        if value is _ABSENT or value is None or not isinstance(value, Hashable):
            return
        buckets = self.by_field.get((object_type, field), {})
        with contextlib.suppress(TypeError):
            bucket = buckets.get(value)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del buckets[value]

    # -- lookups --------------------------------------------------------------------------

    @contextlib.contextmanager
    def narrowed(self, object_type: str, field: str, value: Any) -> Iterator[None]:
        """Within this block a listing of `object_type` takes only the entries whose `field`
        is `value` (all of them when `value` is None or not something a bucket holds)."""
        if value is None or not isinstance(value, Hashable):
            yield
            return
        previous = self._narrowed.get(object_type)
        self._narrowed[object_type] = (field, value)
        try:
            yield
        finally:
            if previous is None:
                self._narrowed.pop(object_type, None)
            else:
                self._narrowed[object_type] = previous

    def candidates(self, object_type: str) -> list[Any]:
        """The entries a listing of `object_type` starts from, in store order."""
        # Taken by the first listing of the type only: a listing made while building the
        # answer (none today) must not see another request's narrowing.
        narrowing = self._narrowed.pop(object_type, None)
        if narrowing is None:
            found = list(self.by_type.get(object_type, {}).values())
        else:
            field, value = narrowing
            try:
                bucket = self.by_field.get((object_type, field), {}).get(value, {})
            except TypeError:
                bucket = {}
            order = self._order
            found = [bucket[key] for key in sorted(bucket, key=order.__getitem__)]
        self.visited += len(found)
        return found

    def counts(self) -> dict[str, Any]:
        return {
            "visited": self.visited,
            "by_type": {name: len(entries) for name, entries in sorted(self.by_type.items())},
        }


class IndexedStore(ls.Store):
    """localstripe's Store (its state-file writes included), keeping `self.index`. Every dict
    method that writes goes through the index; every walk of the whole store is counted."""

    index: StoreIndex

    def __setitem__(self, key, value) -> None:
        old = dict.get(self, key, _ABSENT)
        super().__setitem__(key, value)
        self._indexed(key, old, value)

    def _indexed(self, key, old, value) -> None:
        if old is _ABSENT:
            self.index.added(key, value)
        else:
            self.index.replaced(key, old, value)

    def __delitem__(self, key) -> None:
        old = dict.__getitem__(self, key)
        super().__delitem__(key)
        self.index.removed(key, old)

    def clear(self) -> None:
        super().clear()
        self.index.cleared()

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            old = dict.get(self, key, _ABSENT)
            dict.__setitem__(self, key, value)  # as dict.update: no state-file write per entry
            self._indexed(key, old, value)

    def setdefault(self, key, default=None):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        dict.__setitem__(self, key, default)  # as dict.setdefault: no state-file write
        self.index.added(key, default)
        return default

    def pop(self, key, *default):
        old = dict.get(self, key, _ABSENT)
        result = dict.pop(self, key, *default)
        if old is not _ABSENT:
            self.index.removed(key, old)
        return result

    def popitem(self):
        key, value = dict.popitem(self)
        self.index.removed(key, value)
        return key, value

    def __ior__(self, other):
        self.update(other)
        return self

    # Walks of the whole store, counted. The views' `in` and `len` stay hash lookups; their
    # walks go through __iter__.
    def __iter__(self) -> Iterator[Any]:
        for key in dict.__iter__(self):
            self.index.visited += 1
            yield key

    def keys(self) -> KeysView:
        return KeysView(self)

    def values(self) -> ValuesView:
        return ValuesView(self)

    def items(self) -> ItemsView:
        return ItemsView(self)

    def __reduce__(self):
        # a plain dict: a pickle of the store must not need this module to load
        return (dict, (dict(dict.items(self)),))


def store_index() -> StoreIndex:
    return ls.store.index


# -- localstripe's listings, taking their candidates from the index -----------------------------


def _list_from_index(cls, url, limit=None, starting_after=None, **kwargs):
    """StripeObject._api_list_all, without the walk: the same checks, the same List."""
    if kwargs:
        raise ls.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
    listing = ls.List(url, limit=limit, starting_after=starting_after)
    listing._list = store_index().candidates(cls.object)
    return listing


def _narrowing(object_type: str, field: str, original):
    """A listing classmethod that runs localstripe's `original` with its candidates narrowed
    to the entries whose `field` is the value the request names in the parameter `field`."""

    def listing(cls, url, *args, **kwargs):
        with store_index().narrowed(object_type, field, kwargs.get(field)):
            return original(cls, url, *args, **kwargs)

    return listing


def _refund_listing(original):
    """Refunds by `charge`, or by `payment_intent` (its latest charge's, as localstripe
    resolves it)."""

    def listing(cls, url, *args, **kwargs):
        charge = kwargs.get("charge")
        intent_id = kwargs.get("payment_intent")
        if charge is None and isinstance(intent_id, str):
            intent = dict.get(ls.store, f"payment_intent:{intent_id}")
            latest = getattr(intent, "latest_charge", None)
            charge = getattr(latest, "id", None)
        with store_index().narrowed("refund", "charge", charge):
            return original(cls, url, *args, **kwargs)

    return listing


def _watching_fields(cls) -> None:
    """Writes of `cls`'s indexed fields move the object between the index's buckets."""
    fields = frozenset(INDEXED_FIELDS[cls.object])
    base_setattr = cls.__setattr__

    def __setattr__(self, name, value):
        if name not in fields:
            base_setattr(self, name, value)
            return
        old = self.__dict__.get(name, _ABSENT)
        base_setattr(self, name, value)
        if old is not value:
            store_index().field_changed(self, name, old, value)

    cls.__setattr__ = __setattr__


def _classmethod_function(cls, name: str):
    return cls.__dict__[name].__func__


async def _report(_request: web.Request) -> web.Response:
    return web.json_response({"entries": len(ls.store), **store_index().counts()})


def install(app: web.Application | None = None) -> None:
    """Index localstripe's store and serve its listings from the index; with `app`, add
    `GET /_config/store_index`. Once per process: a second call does nothing."""
    if not isinstance(ls.store, IndexedStore):
        ls.store.__class__ = IndexedStore
        ls.store.index = StoreIndex()
        for key, value in dict.items(ls.store):
            ls.store.index.added(key, value)
        ls.StripeObject._api_list_all = classmethod(_list_from_index)
        ls.Customer._api_list_all = classmethod(
            _narrowing("customer", "email", _classmethod_function(ls.Customer, "_api_list_all"))
        )
        ls.PaymentIntent._api_list_all = classmethod(
            _narrowing(
                "payment_intent",
                "customer",
                _classmethod_function(ls.PaymentIntent, "_api_list_all"),
            )
        )
        ls.Refund._api_list_all = classmethod(
            _refund_listing(_classmethod_function(ls.Refund, "_api_list_all"))
        )
        for cls in (ls.Customer, ls.PaymentIntent, ls.Refund):
            _watching_fields(cls)
    if app is not None and not any(
        getattr(route.resource, "canonical", None) == "/_config/store_index"
        for route in app.router.routes()
    ):
        app.router.add_get("/_config/store_index", _report)
