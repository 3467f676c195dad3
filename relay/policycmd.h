/*
 * policycmd.h - "tlsrelay policy [-c relay.ini] DOMAIN" (relay/policycmd.c).
 */
#ifndef RELAY_POLICYCMD_H
#define RELAY_POLICYCMD_H

int policy_main(int argc, char **argv);

#endif
