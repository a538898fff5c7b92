/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A minimal intrusive doubly linked list, in the kernel's shape. */
#ifndef KCOPYD_LIST_H
#define KCOPYD_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_head {
	struct list_head *next, *prev;
};

#define list_entry(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void list_init(struct list_head *head)
{
	head->next = head;
	head->prev = head;
}

static inline bool list_empty(const struct list_head *head)
{
	return head->next == head;
}

static inline void list_add_tail(struct list_head *node, struct list_head *head)
{
	node->prev = head->prev;
	node->next = head;
	head->prev->next = node;
	head->prev = node;
}

static inline void list_del_init(struct list_head *node)
{
	node->prev->next = node->next;
	node->next->prev = node->prev;
	list_init(node);
}

/* Move every node of @from to the tail of @to, leaving @from empty. */
static inline void list_splice_tail_init(struct list_head *from, struct list_head *to)
{
	if (list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	list_init(from);
}

static inline struct list_head *list_pop(struct list_head *head)
{
	struct list_head *node = head->next;

	if (node == head)
		return NULL;
	list_del_init(node);
	return node;
}

#endif /* KCOPYD_LIST_H */
