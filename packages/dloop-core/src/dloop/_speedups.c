/* dloop._speedups: an optional C iterator for the quiet steps of runs over sized data.
 *
 * ``Stepper(run, EMPTY)`` iterates like ``sized_steps(run)`` (the pure-Python generator
 * in _steps.py): re-iterable data whose epoch lengths are known. It only owns the per-step hot
 * path: take the next batch, count the step, read the clock once, and when no decision is
 * due (step < next_step and floor <= now < run.time_cell[0], with a float reading) keep step
 * and now and return (batch, EMPTY). Everything else calls back into Python, on the run:
 *   run._begin() -> bool                 the start of iteration (False: nothing to yield)
 *   run._open_sized_epoch() -> (iterator, next step to decide)
 *   run._raise_short_epoch()             raises the ValueError for data that ended early
 *   run._end()                           after the run's last step, when iterating goes on
 *   run._decide(step, now, floor) -> (events, next step to decide, status, checked now)
 *                                        floor is the previous reading; status 0: go on,
 *                                        1: the epoch ended, 2: the run did; it stores
 *                                        run.step and run.now (the checked reading) itself
 *   run.signals.restore()                when the iteration ends, fails, is closed or freed
 * Quiet steps keep step and now here; they are put on the run (flushed) before any callback
 * and by ``settle()``. Only attribute access reaches the run, so any object works (a wrong
 * one fails with an AttributeError or TypeError, never a crash). Semantics follow the
 * generator: errors propagate unchanged and end the iteration (a StopIteration raised by a
 * callback becomes RuntimeError, as PEP 479 does), close() ends it, re-entering it raises
 * ValueError.
 *
 * Written for the limited API of CPython 3.10 (Py_LIMITED_API), so that one abi3 wheel
 * serves every CPython from 3.10 on.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The limited API has functions where the full API has macros; a build without
 * Py_LIMITED_API (for measuring what the stable ABI costs) uses the macros. */
#ifdef Py_LIMITED_API
#define CALL_NO_ARGS(callable) PyObject_CallNoArgs(callable)
#define CALL3(callable, a, b, c) PyObject_CallFunctionObjArgs(callable, a, b, c, NULL)
#define LIST_ITEM(list, index) PyList_GetItem(list, index)
#define FLOAT_VALUE(number) PyFloat_AsDouble(number)
#define TUPLE_SET(tuple, index, item) PyTuple_SetItem(tuple, index, item)
#define NEXT(self) PyIter_Next((self)->iterator)
#else
#define CALL_NO_ARGS(callable) PyObject_Vectorcall(callable, NULL, 0, NULL)
static inline PyObject *
call3(PyObject *callable, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *args[3] = {a, b, c};
    return PyObject_Vectorcall(callable, args, 3, NULL);
}
#define CALL3(callable, a, b, c) call3(callable, a, b, c)
static inline PyObject *
list_item(PyObject *list, Py_ssize_t index)
{
    if (index >= PyList_GET_SIZE(list)) {
        PyErr_SetString(PyExc_IndexError, "run.time_cell must hold one item");
        return NULL;
    }
    return PyList_GET_ITEM(list, index);
}
#define LIST_ITEM(list, index) list_item(list, index)
#define FLOAT_VALUE(number) PyFloat_AS_DOUBLE(number)
static inline int
tuple_set(PyObject *tuple, Py_ssize_t index, PyObject *item)
{
    PyObject *old = PyTuple_GET_ITEM(tuple, index);
    PyTuple_SET_ITEM(tuple, index, item);
    Py_XDECREF(old);
    return 0;
}
#define TUPLE_SET(tuple, index, item) tuple_set(tuple, index, item)
static inline PyObject *
next_batch(PyObject *iterator)
{
    PyObject *batch = Py_TYPE(iterator)->tp_iternext(iterator);
    if (batch == NULL && PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear();
    }
    return batch;
}
#define NEXT(self) next_batch((self)->iterator)
#endif

#ifndef Py_XSETREF /* not part of the limited API */
#define Py_XSETREF(target, value)                                                          \
    do {                                                                                   \
        PyObject *_old = (PyObject *)(target);                                             \
        (target) = (value);                                                                \
        Py_XDECREF(_old);                                                                  \
    } while (0)
#endif

enum { NOT_STARTED, BETWEEN_EPOCHS, IN_EPOCH, DONE };
enum { GO_ON = 0, EPOCH_OVER = 1, FINISHED = 2 };

typedef struct {
    PyObject_HEAD
    PyObject *run;
    PyObject *clock;
    PyObject *cell;        /* run.time_cell: a list whose item 0 is when time is due */
    PyObject *empty;       /* the shared empty frozenset of quiet steps */
    PyObject *begin;       /* bound run._begin */
    PyObject *open_epoch;  /* bound run._open_sized_epoch */
    PyObject *short_epoch; /* bound run._raise_short_epoch */
    PyObject *decide;      /* bound run._decide */
    PyObject *end;         /* bound run._end */
    PyObject *restore;     /* bound run.signals.restore */
    PyObject *iterator;    /* this epoch's iterator; NULL outside an epoch */
    PyObject *result;      /* the last (batch, events) returned, reused when free */
    PyObject *now;         /* the clock reading of the last step returned (a float) */
    double floor;          /* its value: a reading below it is not quiet */
    PyObject *due;         /* the float last read from run.time_cell[0] (a reference) */
    double due_value;      /* its value, read once per object rather than once per step */
    long long step;
    long long next_step;
    int state;
    int status;            /* what _decide said of the last step returned (-1: quiet) */
    int dirty;             /* step and now are newer here than on the run */
    int running;
} Stepper;

static PyObject *str_step, *str_now, *str_time_cell, *str_clock, *str_signals, *str_restore,
    *str_begin, *str_open_sized_epoch, *str_raise_short_epoch, *str_decide, *str_end;

/* ------------------------------------------------------------------ helpers */

/* Put step and now of the last quiet step on the run. */
static int
flush(Stepper *self)
{
    if (!self->dirty) {
        return 0;
    }
    PyObject *step = PyLong_FromLongLong(self->step);
    if (step == NULL) {
        return -1;
    }
    int error = PyObject_SetAttr(self->run, str_step, step);
    Py_DECREF(step);
    if (error < 0 || PyObject_SetAttr(self->run, str_now, self->now) < 0) {
        return -1;
    }
    self->dirty = 0;
    return 0;
}

/* Steps are ints from -1 (none done) to 2**62 (the run's "never"): SPEC rule 22 keeps
 * every step below 2**62, so step + 1 never overflows. Anything else is refused. */
#define STEP_LIMIT (1LL << 62)

static int
as_step(PyObject *value, long long *result)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || v < -1 || v > STEP_LIMIT) {
        PyErr_SetString(PyExc_ValueError, "a step of the run must be an int from -1 to 2**62");
        return -1;
    }
    *result = v;
    return 0;
}

/* After run._decide stored the checked reading on the run: keep it as the floor. */
static int
read_back_now(Stepper *self)
{
    PyObject *now = PyObject_GetAttr(self->run, str_now);
    if (now == NULL) {
        return -1;
    }
    double value = PyFloat_AsDouble(now);
    if (value == -1.0 && PyErr_Occurred()) {
        Py_DECREF(now);
        return -1;
    }
    Py_XSETREF(self->now, now);
    self->floor = value;
    return 0;
}

/* End the iteration: drop the epoch's iterator, put back signal handlers. Keeps any
 * exception that is set; returns -1 if restoring raised (that error is then set). */
static int
finish(Stepper *self)
{
    int was_started = self->state != NOT_STARTED;
    self->state = DONE;
    Py_CLEAR(self->iterator);
    Py_CLEAR(self->result);
    if (!was_started || self->restore == NULL) {
        self->dirty = 0;
        return 0;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *result = flush(self) < 0 ? NULL : PyObject_CallNoArgs(self->restore);
    self->dirty = 0;
    if (result == NULL) {
        if (type != NULL) { /* like a `finally` that raises: the new error wins */
            PyErr_NormalizeException(&type, &value, &traceback);
            PyObject *t2, *v2, *tb2;
            PyErr_Fetch(&t2, &v2, &tb2);
            PyErr_NormalizeException(&t2, &v2, &tb2);
            if (v2 != NULL && value != NULL) {
                PyException_SetContext(v2, value); /* steals value */
                value = NULL;
            }
            PyErr_Restore(t2, v2, tb2);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
        }
        return -1;
    }
    Py_DECREF(result);
    PyErr_Restore(type, value, traceback);
    return 0;
}

/* An error escapes: end the iteration; a StopIteration becomes RuntimeError (PEP 479). */
static PyObject *
fail(Stepper *self)
{
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL) {
            PyException_SetTraceback(value, traceback);
        }
        PyErr_SetString(PyExc_RuntimeError, "generator raised StopIteration");
        PyObject *t2, *v2, *tb2;
        PyErr_Fetch(&t2, &v2, &tb2);
        PyErr_NormalizeException(&t2, &v2, &tb2);
        if (v2 != NULL && value != NULL) {
            Py_INCREF(value);
            PyException_SetCause(v2, value);   /* steals */
            PyException_SetContext(v2, value); /* steals */
        }
        else {
            Py_XDECREF(value);
        }
        Py_XDECREF(type);
        Py_XDECREF(traceback);
        PyErr_Restore(t2, v2, tb2);
    }
    finish(self);
    return NULL;
}

/* The (batch, events) result; steals batch, borrows events. Like zip() and enumerate(),
 * the previous result tuple is reused when the consumer no longer holds it (a `for`
 * unpacking it drops it at once), which saves an allocation per step. */
static inline PyObject *
pair(Stepper *self, PyObject *batch, PyObject *events)
{
    PyObject *result = self->result;
    Py_INCREF(events);
    if (result != NULL && Py_REFCNT(result) == 1) {
        /* Setting an item steals the new one and releases the old one. */
        if (TUPLE_SET(result, 0, batch) < 0) {
            Py_DECREF(events);
            return NULL;
        }
        if (TUPLE_SET(result, 1, events) < 0) {
            return NULL;
        }
        /* the collector may have untracked it while it held atomic values only */
        if (!PyObject_GC_IsTracked(result)) {
            PyObject_GC_Track(result);
        }
        Py_INCREF(result);
        return result;
    }
    result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(batch);
        Py_DECREF(events);
        return NULL;
    }
    if (PyTuple_SetItem(result, 0, batch) < 0 || PyTuple_SetItem(result, 1, events) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    Py_INCREF(result);
    Py_XSETREF(self->result, result);
    return result;
}

/* ------------------------------------------------------------------ the slow steps */

static int
start(Stepper *self)
{
    self->state = BETWEEN_EPOCHS; /* from here on, ending restores the signal handlers */
    PyObject *result = PyObject_CallNoArgs(self->begin);
    if (result == NULL) {
        return -1;
    }
    int go = PyObject_IsTrue(result);
    Py_DECREF(result);
    if (go <= 0) {
        return go < 0 ? -1 : 0;
    }
    PyObject *step = PyObject_GetAttr(self->run, str_step);
    if (step == NULL) {
        return -1;
    }
    int error = as_step(step, &self->step);
    Py_DECREF(step);
    if (error < 0 || read_back_now(self) < 0) {
        return -1;
    }
    /* Read again: _begin may have put a converting clock in place (a clock that gives
     * another number type than float). */
    PyObject *clock = PyObject_GetAttr(self->run, str_clock);
    if (clock == NULL) {
        return -1;
    }
    Py_XSETREF(self->clock, clock);
    return 1;
}

static int
open_epoch(Stepper *self)
{
    if (flush(self) < 0) {
        return -1;
    }
    PyObject *result = PyObject_CallNoArgs(self->open_epoch);
    if (result == NULL) {
        return -1;
    }
    PyObject *iterator = NULL;
    long long next_step = 0;
    if (!PyTuple_Check(result) || PyTuple_Size(result) != 2 ||
        !PyIter_Check(iterator = PyTuple_GetItem(result, 0))) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_TypeError,
                        "run._open_sized_epoch() must return (iterator, next_step)");
        return -1;
    }
    if (as_step(PyTuple_GetItem(result, 1), &next_step) < 0) {
        Py_DECREF(result);
        return -1;
    }
    Py_INCREF(iterator);
    Py_XSETREF(self->iterator, iterator);
    Py_DECREF(result);
    self->next_step = next_step;
    self->status = -1;
    self->state = IN_EPOCH;
    return 0;
}

/* Step ``step`` needs a decision: hand it to run._decide, with the previous reading as
 * the floor below which readings do not go. Steals batch and now. */
static PyObject *
decided_step(Stepper *self, PyObject *batch, long long step, PyObject *now)
{
    PyObject *step_obj = NULL, *result = NULL, *checked;
    long long next_step;
    int status;
    /* The run gets the quiet position first: _decide may call back into code that reads
     * the loop's state (a sync's combine, a warning hook), which must not settle the older
     * quiet position over the step _decide stores. */
    if (flush(self) < 0 || (step_obj = PyLong_FromLongLong(step)) == NULL) {
        goto error;
    }
    result = CALL3(self->decide, step_obj, now, self->now);
    Py_CLEAR(step_obj);
    Py_CLEAR(now);
    if (result == NULL) {
        goto error;
    }
    self->step = step;
    self->dirty = 0; /* run._decide stored step and now on the run */
    if (!PyTuple_Check(result) || PyTuple_Size(result) != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "run._decide() must return (events, next_step, status, now)");
        goto error;
    }
    if (as_step(PyTuple_GetItem(result, 1), &next_step) < 0) {
        goto error;
    }
    long raw_status = PyLong_AsLong(PyTuple_GetItem(result, 2));
    if (raw_status == -1 && PyErr_Occurred()) {
        goto error;
    }
    if (raw_status < GO_ON || raw_status > FINISHED) {
        PyErr_SetString(PyExc_ValueError, "run._decide() returned a status other than 0, 1, 2");
        goto error;
    }
    status = (int)raw_status;
    checked = PyTuple_GetItem(result, 3);
    double floor = PyFloat_AsDouble(checked);
    if (floor == -1.0 && PyErr_Occurred()) {
        goto error;
    }
    Py_INCREF(checked);
    Py_XSETREF(self->now, checked);
    self->floor = floor;
    self->next_step = next_step;
    self->status = status;
    PyObject *out = pair(self, batch, PyTuple_GetItem(result, 0));
    Py_DECREF(result);
    return out;
error:
    Py_XDECREF(step_obj);
    Py_XDECREF(now);
    Py_XDECREF(result);
    Py_DECREF(batch);
    return NULL;
}

/* ------------------------------------------------------------------ __next__ */

static PyObject *
stepper_next_locked(Stepper *self)
{
    if (self->state != IN_EPOCH || self->status > GO_ON) {
        int status;
        if (self->state == DONE) {
            return NULL;
        }
        if (self->state == NOT_STARTED) {
            status = start(self);
            if (status <= 0) {
                return status < 0 ? fail(self) : (finish(self), NULL);
            }
        }
        if (self->status == FINISHED) {
            if (flush(self) < 0) {
                return fail(self);
            }
            PyObject *ended = PyObject_CallNoArgs(self->end);
            if (ended == NULL) {
                return fail(self);
            }
            Py_DECREF(ended);
            finish(self);
            return NULL;
        }
        if (self->status == EPOCH_OVER) {
            Py_CLEAR(self->iterator);
            self->state = BETWEEN_EPOCHS;
        }
        if (self->state == BETWEEN_EPOCHS && open_epoch(self) < 0) {
            return fail(self);
        }
    }

    /* --- hot path: one batch, one clock reading, three compares, two stores --- */
    PyObject *batch = NEXT(self);
    if (batch == NULL) {
        if (PyErr_Occurred()) {
            return fail(self);
        }
        /* Exhausted before the epoch's last step: the same ValueError as the generator. */
        PyObject *result = flush(self) < 0 ? NULL : PyObject_CallNoArgs(self->short_epoch);
        Py_XDECREF(result);
        if (result != NULL) {
            PyErr_SetString(PyExc_RuntimeError, "run._raise_short_epoch() returned");
        }
        return fail(self);
    }
    long long step = self->step + 1;
    PyObject *now = CALL_NO_ARGS(self->clock);
    if (now == NULL) {
        Py_DECREF(batch);
        return fail(self);
    }
    if (step < self->next_step && PyFloat_CheckExact(now)) {
        PyObject *due = LIST_ITEM(self->cell, 0); /* borrowed; the list keeps one item */
        if (due == NULL) {
            Py_DECREF(now);
            Py_DECREF(batch);
            return fail(self);
        }
        if (due != self->due) {
            /* The cell holds a new object: read its value once. The reference kept makes
             * the identity test sound (a freed float's address may be reused). */
            if (!PyFloat_CheckExact(due)) {
                goto decide;
            }
            Py_INCREF(due);
            Py_XSETREF(self->due, due);
            self->due_value = FLOAT_VALUE(due);
        }
        double value = FLOAT_VALUE(now);
        if (self->floor <= value && value < self->due_value) {
            self->step = step;
            self->floor = value;
            Py_XSETREF(self->now, now);
            self->dirty = 1;
            self->status = -1;
            PyObject *out = pair(self, batch, self->empty);
            return out == NULL ? fail(self) : out;
        }
    }
decide:;
    PyObject *result = decided_step(self, batch, step, now);
    return result == NULL ? fail(self) : result;
}

static PyObject *
stepper_next(Stepper *self)
{
    if (self->running) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    self->running = 1;
    PyObject *result = stepper_next_locked(self);
    self->running = 0;
    return result;
}

/* ------------------------------------------------------------------ the type */

static PyObject *
stepper_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *run, *empty;
    if (!PyArg_ParseTuple(args, "OO!:Stepper", &run, &PyFrozenSet_Type, &empty)) {
        return NULL;
    }
    if (kwargs != NULL && PyDict_Size(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Stepper takes no keyword arguments");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    Stepper *self = (Stepper *)alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->run = Py_NewRef(run);
    self->empty = Py_NewRef(empty);
    self->step = -1;
    self->floor = 0.0;
    self->state = NOT_STARTED;
    self->status = -1;

    PyObject *signals = NULL;
    if ((self->clock = PyObject_GetAttr(run, str_clock)) == NULL ||
        (self->cell = PyObject_GetAttr(run, str_time_cell)) == NULL ||
        (self->begin = PyObject_GetAttr(run, str_begin)) == NULL ||
        (self->open_epoch = PyObject_GetAttr(run, str_open_sized_epoch)) == NULL ||
        (self->short_epoch = PyObject_GetAttr(run, str_raise_short_epoch)) == NULL ||
        (self->decide = PyObject_GetAttr(run, str_decide)) == NULL ||
        (self->end = PyObject_GetAttr(run, str_end)) == NULL ||
        (signals = PyObject_GetAttr(run, str_signals)) == NULL ||
        (self->restore = PyObject_GetAttr(signals, str_restore)) == NULL) {
        Py_XDECREF(signals);
        Py_DECREF(self);
        return NULL;
    }
    Py_DECREF(signals);
    if (!PyList_CheckExact(self->cell) || PyList_Size(self->cell) != 1) {
        PyErr_SetString(PyExc_TypeError, "run.time_cell must be a list of one float");
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
stepper_traverse(Stepper *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->run);
    Py_VISIT(self->clock);
    Py_VISIT(self->cell);
    Py_VISIT(self->empty);
    Py_VISIT(self->begin);
    Py_VISIT(self->open_epoch);
    Py_VISIT(self->short_epoch);
    Py_VISIT(self->decide);
    Py_VISIT(self->end);
    Py_VISIT(self->restore);
    Py_VISIT(self->iterator);
    Py_VISIT(self->result);
    Py_VISIT(self->now);
    Py_VISIT(self->due);
    return 0;
}

static int
stepper_clear(Stepper *self)
{
    Py_CLEAR(self->run);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->cell);
    Py_CLEAR(self->empty);
    Py_CLEAR(self->begin);
    Py_CLEAR(self->open_epoch);
    Py_CLEAR(self->short_epoch);
    Py_CLEAR(self->decide);
    Py_CLEAR(self->end);
    Py_CLEAR(self->restore);
    Py_CLEAR(self->iterator);
    Py_CLEAR(self->result);
    Py_CLEAR(self->now);
    Py_CLEAR(self->due);
    return 0;
}

/* Freed (or collected) while running: put the signal handlers back, like a generator's
 * `finally`. The collector calls it before stepper_clear; dealloc calls it too. */
static void
stepper_finalize(Stepper *self)
{
    if (self->state == NOT_STARTED || self->state == DONE) {
        return;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (finish(self) < 0) {
        PyErr_WriteUnraisable(self->run); /* not self: dealloc calls this at refcount 0 */
    }
    PyErr_Restore(type, value, traceback);
}

static void
stepper_dealloc(Stepper *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    stepper_finalize(self); /* calls back into the run only, never with this object */
    stepper_clear(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

static PyObject *
stepper_close(Stepper *self, PyObject *Py_UNUSED(ignored))
{
    if (self->running) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    if (self->state != DONE && finish(self) < 0) {
        return NULL;
    }
    self->state = DONE;
    Py_RETURN_NONE;
}

static PyObject *
stepper_settle(Stepper *self, PyObject *Py_UNUSED(ignored))
{
    if (flush(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stepper_get_step(Stepper *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->step);
}

static PyObject *
stepper_get_finished(Stepper *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->state == DONE);
}

static PyMethodDef stepper_methods[] = {
    {"close", (PyCFunction)stepper_close, METH_NOARGS,
     "End the iteration and put back stop-signal handlers; like generator.close()."},
    {"settle", (PyCFunction)stepper_settle, METH_NOARGS,
     "Put the step and clock reading of the last step returned on the run."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stepper_getset[] = {
    {"step", (getter)stepper_get_step, NULL, "The last step returned (-1 before any).", NULL},
    {"finished", (getter)stepper_get_finished, NULL, "Whether the iteration has ended.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot stepper_slots[] = {
    {Py_tp_doc, "Iterate a run over sized data like dloop._steps.sized_steps(run), quiet steps in C."},
    {Py_tp_new, stepper_new},
    {Py_tp_dealloc, stepper_dealloc},
    {Py_tp_finalize, stepper_finalize},
    {Py_tp_traverse, stepper_traverse},
    {Py_tp_clear, stepper_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, stepper_next},
    {Py_tp_methods, stepper_methods},
    {Py_tp_getset, stepper_getset},
    {0, NULL},
};

static PyType_Spec stepper_spec = {
    .name = "dloop._speedups.Stepper",
    .basicsize = sizeof(Stepper),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = stepper_slots,
};

/* ------------------------------------------------------------------ the module */

static int
intern(PyObject **target, const char *text)
{
    if (*target == NULL) {
        *target = PyUnicode_InternFromString(text);
    }
    return *target == NULL ? -1 : 0;
}

static int
speedups_exec(PyObject *module)
{
    if (intern(&str_step, "step") < 0 || intern(&str_now, "now") < 0 ||
        intern(&str_time_cell, "time_cell") < 0 || intern(&str_clock, "clock") < 0 ||
        intern(&str_signals, "signals") < 0 || intern(&str_restore, "restore") < 0 ||
        intern(&str_begin, "_begin") < 0 ||
        intern(&str_open_sized_epoch, "_open_sized_epoch") < 0 ||
        intern(&str_raise_short_epoch, "_raise_short_epoch") < 0 ||
        intern(&str_decide, "_decide") < 0 || intern(&str_end, "_end") < 0) {
        return -1;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &stepper_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "Stepper", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dloop._speedups",
    .m_doc = "Optional C accelerator for dloop's per-step hot path over sized data.",
    .m_size = 0,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
