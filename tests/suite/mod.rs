mod alarm;
mod cli;
mod cpe;
mod demo;
mod ovoc;
mod session;
