#!/usr/bin/env python3
"""Sends the same faulty inputs to an AMQP 0-9-1 broker and prints how it answers each one
(connection.close / channel.close with reply code and text, EOF, reset or silence).

Run it against Warren and against a reference RabbitMQ to compare reply codes side by side:
    python3 scripts/parity_probe.py 5672   # Warren
    python3 scripts/parity_probe.py 5673   # RabbitMQ (see ../shared/RABBITMQ.md)
Only talks to 127.0.0.1. Standard library only.
"""
import socket, struct, sys
def frame(t,ch,p): return struct.pack('>BHI',t,ch,len(p))+p+b'\xce'
def meth(ch,cls,mid,args=b''): return frame(1,ch,struct.pack('>HH',cls,mid)+args)
def sstr(s): return bytes([len(s)])+s
def lstr(s): return struct.pack('>I',len(s))+s
class C:
    def __init__(s,port): s.s=socket.create_connection(('127.0.0.1',port)); s.s.settimeout(5); s.buf=b''
    def recv(s):
        while True:
            if len(s.buf)>=7:
                t,ch,size=struct.unpack('>BHI',s.buf[:7])
                if len(s.buf)>=size+8:
                    p=s.buf[7:7+size]; s.buf=s.buf[8+size:]; return t,ch,p
            try: d=s.s.recv(65536)
            except socket.timeout: return 'TIMEOUT'
            except ConnectionResetError: return 'RESET'
            if not d: return 'EOF'
            s.buf+=d
def handshake(port, channel_max=2047, frame_max=131072, caps=True):
    c=C(port); c.s.sendall(b'AMQP\x00\x00\x09\x01'); c.recv()
    props=b''
    if caps:
        inner=sstr(b'authentication_failure_close')+b't\x01'
        props=sstr(b'capabilities')+b'F'+lstr(inner)
    c.s.sendall(meth(0,10,11,lstr(props)+sstr(b'PLAIN')+lstr(b'\0guest\0guest')+sstr(b'en_US'))); c.recv()
    c.s.sendall(meth(0,10,31,struct.pack('>HIH',channel_max,frame_max,0)))
    c.s.sendall(meth(0,10,40,sstr(b'/')+sstr(b'')+b'\x00')); r=c.recv()
    return c, r
def outcome(c):
    for _ in range(5):
        r=c.recv()
        if isinstance(r,str): return r
        t,ch,p=r
        if t==8: continue
        if t==1:
            cls,mid=struct.unpack('>HH',p[:4])
            if (cls,mid)==(10,50):
                code=struct.unpack('>H',p[4:6])[0]; n=p[6]; text=p[7:7+n].decode(errors='replace'); return f'connection.close {code} {text[:70]!r}'
            if (cls,mid)==(20,40):
                code=struct.unpack('>H',p[4:6])[0]; n=p[6]; text=p[7:7+n].decode(errors='replace'); return f'channel.close ch{ch} {code} {text[:70]!r}'
            return f'method {cls}.{mid} ch{ch}'
        return f'frame type {t}'
    return '?'
def open_ch(c,n): c.s.sendall(meth(n,20,10,sstr(b''))); return c.recv()
deep=b'\x00\x00\x00\x00'
for _ in range(10000):
    e=b'\x00F'+deep; deep=struct.pack('>I',len(e))+e
cases = {
 'unknown class 99.7': lambda c: (open_ch(c,1), c.s.sendall(meth(1,99,7))),
 'unknown method 60.200': lambda c: (open_ch(c,1), c.s.sendall(meth(1,60,200))),
 'truncated queue.declare': lambda c: (open_ch(c,1), c.s.sendall(meth(1,50,10,b'\x00\x00'))),
 'method on unopened channel': lambda c: c.s.sendall(meth(3,20,20,b'\x01')),
 'channel.open twice': lambda c: (open_ch(c,1), c.s.sendall(meth(1,20,10,sstr(b'')))),
 'heartbeat on channel 5': lambda c: c.s.sendall(frame(8,5,b'')),
 'body without method': lambda c: (open_ch(c,1), c.s.sendall(frame(3,1,b'orphan'))),
 'header without method': lambda c: (open_ch(c,1), c.s.sendall(frame(2,1,struct.pack('>HHQH',60,0,0,0)))),
 'bad frame end': lambda c: c.s.sendall(b'\x08\x00\x00\x00\x00\x00\x00\x00'),
 'oversize header': lambda c: c.s.sendall(b'\x01\x00\x01'+struct.pack('>I',131072-7)),
 'unknown frame type 4': lambda c: c.s.sendall(frame(4,0,b'')),
 'garbage': lambda c: c.s.sendall(b'GARBAGE GARBAGE GARBAGE'),
 'basic.deliver from client': lambda c: (open_ch(c,1), c.s.sendall(meth(1,60,60,sstr(b'x')+struct.pack('>Q',1)+b'\x00'+sstr(b'')+sstr(b'')))),
 'connection.open again': lambda c: c.s.sendall(meth(0,10,40,sstr(b'/')+sstr(b'')+b'\x00')),
 'channel.open on channel 0': lambda c: c.s.sendall(meth(0,20,10,sstr(b''))),
 'channel.close-ok on open channel': lambda c: (open_ch(c,1), c.s.sendall(meth(1,20,41))),
 'deep nested queue.declare args': lambda c: (open_ch(c,1), c.s.sendall(meth(1,50,10,b'\x00\x00'+sstr(b'q')+b'\x00'+deep))),
 'method frame on channel 0 of class basic': lambda c: c.s.sendall(meth(0,60,10,struct.pack('>IHB',0,1,0))),
 'method frame on ch1 of class connection': lambda c: (open_ch(c,1), c.s.sendall(meth(1,10,50,struct.pack('>H',200)+sstr(b'x')+struct.pack('>HH',0,0)))),
 'tx.select (class 90)': lambda c: (open_ch(c,1), c.s.sendall(meth(1,90,10))),
}
port=int(sys.argv[1])
for name,fn in cases.items():
    c,r=handshake(port); fn(c); print(f'{name:45s} -> {outcome(c)}')
# channel max
c,_=handshake(port, channel_max=10); c.s.sendall(meth(11,20,10,sstr(b''))); print(f'{"channel 11 over channel_max 10":45s} -> {outcome(c)}')
c=C(port); c.s.sendall(b'AMQP\x00\x00\x09\x01'); c.recv(); c.s.sendall(meth(0,10,11,lstr(b'')+sstr(b'PLAIN')+lstr(b'\0guest\0guest')+sstr(b'en_US'))); c.recv(); c.s.sendall(meth(0,10,31,struct.pack('>HIH',2047,100,0))); print(f'{"tune-ok frame_max 100":45s} -> {outcome(c)}')
c=C(port); c.s.sendall(b'AMQP\x00\x00\x09\x01'); c.recv(); c.s.sendall(meth(0,10,11,lstr(b'')+sstr(b'PLAIN')+lstr(b'\0guest\0guest')+sstr(b'en_US'))); c.recv(); c.s.sendall(meth(0,10,31,struct.pack(">HIH",4000,131072,0))); print(f'{"tune-ok channel_max 4000":45s} -> {outcome(c)}')
c=C(port); c.s.sendall(b'AMQP\x00\x00\x09\x01'); c.recv(); c.s.sendall(meth(0,10,11,lstr(b'')+sstr(b'PLAIN')+lstr(b'\0guest\0bad')+sstr(b'en_US'))); print(f'{"bad password, no capability":45s} -> {outcome(c)}')
c=C(port); c.s.sendall(b'AMQP\x00\x00\x09\x01'); c.recv(); c.s.sendall(meth(0,10,11,lstr(b'')+sstr(b'NOPE')+lstr(b'\0guest\0guest')+sstr(b'en_US'))); print(f'{"unknown mechanism":45s} -> {outcome(c)}')
c=C(port); c.s.sendall(b'AMQP\x00\x00\x09\x01'); c.recv(); c.s.sendall(meth(0,20,10,sstr(b''))); print(f'{"channel.open before start-ok":45s} -> {outcome(c)}')
